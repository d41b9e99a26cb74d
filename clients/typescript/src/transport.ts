/**
 * The Node.js transports (gRPC over HTTP/2, Connect over HTTP/1.1 or HTTP/2) from
 * `@connectrpc/connect-node`, loaded on first use so that the rest of the client also runs
 * where that package cannot (browsers, edge runtimes: pass a `Transport` of your own, such
 * as `@connectrpc/connect-web`'s `createConnectTransport`). Each transport owns its
 * connections, which `close()` ends.
 */

import type { Transport } from "@connectrpc/connect";

export interface NodeTransportOptions {
  readonly kind: "grpc" | "connect";
  readonly baseUrl: string;
  /** Connect only: "1.1" (default) or "2". gRPC is always HTTP/2. */
  readonly httpVersion: "1.1" | "2";
  /** Connect only: binary protobuf (`application/proto`) instead of JSON. */
  readonly useBinaryFormat: boolean;
}

export interface OwnedTransport {
  readonly transport: Transport;
  close(): void;
}

/** What decoding tolerates: fields a newer server added are skipped, not an error. */
const jsonOptions = { ignoreUnknownFields: true } as const;

export async function nodeTransport(o: NodeTransportOptions): Promise<OwnedTransport> {
  const connectNode = await import("@connectrpc/connect-node");
  if (o.kind === "grpc" || o.httpVersion === "2") {
    const sessionManager = new connectNode.Http2SessionManager(o.baseUrl);
    const transport =
      o.kind === "grpc"
        ? connectNode.createGrpcTransport({ baseUrl: o.baseUrl, sessionManager, jsonOptions })
        : connectNode.createConnectTransport({
            baseUrl: o.baseUrl,
            httpVersion: "2",
            sessionManager,
            useBinaryFormat: o.useBinaryFormat,
            jsonOptions,
          });
    return { transport, close: () => sessionManager.abort() };
  }
  const http = await import(o.baseUrl.startsWith("https:") ? "node:https" : "node:http");
  const agent = new http.Agent({ keepAlive: true });
  const transport = connectNode.createConnectTransport({
    baseUrl: o.baseUrl,
    httpVersion: "1.1",
    useBinaryFormat: o.useBinaryFormat,
    nodeOptions: { agent },
    jsonOptions,
  });
  return { transport, close: () => agent.destroy() };
}

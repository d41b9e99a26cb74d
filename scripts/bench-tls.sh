# Sourced by the bench scripts: bench_tls DIR makes a throwaway CA and a server certificate
# for 127.0.0.1 in DIR (ca.pem, server.pem, server.key), mints an admin token into $TOKEN
# and writes DIR/permitd.toml turning token auth on. Needs $BIN.
bench_tls() {
  local dir=$1 minted
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  ( cd "$dir"
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 -subj "/CN=bench CA" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    openssl req "${ec[@]}" -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 1 -days 2 \
      -extfile server.ext -out server.pem 2>/dev/null )
  minted=$("$BIN" token new --name bench --tenant bench --role admin)
  TOKEN=$(sed -n 's/^token: //p' <<<"$minted")
  { echo '[auth]'; echo 'mode = "tokens"'; sed -n '/^\[\[auth.principals\]\]/,$p' <<<"$minted"; } > "$dir/permitd.toml"
}

//! `Permits.AcquirePermits`: many AcquirePermit items in one call, each validated and
//! answered on its own by the same code as the unary call (the caller passes it in:
//! `PermitsService::acquire_one`).
//!
//! Items that queue (`max_wait`) must not hold the others up, so every item runs as its own
//! future and a small join ([`join_in_order`]) drives them all inside the one request task:
//! no task spawned per item, no extra crate. Items start in order (an earlier item reaches
//! a bucket first); an immediate item finishes on its first poll, a queued one when its
//! bucket answers or its wait ends. The join starts at most [`START_PER_POLL`] items per
//! poll and then yields, so a batch of 1 000 immediate items does not hold a worker thread
//! for its whole length.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::Status;

use crate::permits::PermitError;
use crate::proto;

/// Most items in one AcquirePermits call.
pub const MAX_BATCH: usize = 1000;
/// Items started per poll of the join before it yields to other tasks.
const START_PER_POLL: usize = 64;

/// Answer every item of `requests` (at most [`MAX_BATCH`]) with `one`, the unary call's
/// own code.
///
/// # Errors
/// `requests` holds more than [`MAX_BATCH`] items. Every other failure is an item's.
pub(super) async fn acquire_all<'a, F, Fut>(
    requests: &'a [proto::AcquirePermitRequest],
    one: F,
) -> Result<proto::AcquirePermitsResponse, PermitError>
where
    F: Fn(&'a proto::AcquirePermitRequest) -> Fut,
    Fut: Future<Output = Result<proto::AcquirePermitResponse, Status>>,
{
    if requests.len() > MAX_BATCH {
        return Err(PermitError::Invalid {
            field: "requests".into(),
            message: format!("{} items, at most {MAX_BATCH}", requests.len()),
        });
    }
    let items = requests.iter().map(|r| Box::pin(one(r))).collect();
    let answers = join_in_order(items).await;
    let results = answers
        .into_iter()
        .enumerate()
        .map(|(i, answer)| proto::AcquirePermitResult {
            result: Some(match answer {
                Ok(resp) => proto::acquire_permit_result::Result::Response(resp),
                Err(e) => proto::acquire_permit_result::Result::Error(item_error(i, &e)),
            }),
        })
        .collect();
    Ok(proto::AcquirePermitsResponse { results })
}

/// An item's error as the status the unary call would have failed with; a field name gets
/// the item's index (`requests[3].cost.tokens`).
fn item_error(index: usize, status: &Status) -> proto::PermitItemError {
    // An invalid field's message starts with the field: name it within the batch.
    let message = if status.code() == tonic::Code::InvalidArgument {
        format!("requests[{index}].{}", status.message())
    } else {
        status.message().to_owned()
    };
    proto::PermitItemError {
        code: status.code() as i32,
        message,
    }
}

/// One item of the join.
enum Slot<F: Future> {
    /// Not done (or not started: slots from `next` on are not polled yet).
    Running(Pin<Box<F>>),
    /// Done.
    Done(F::Output),
    /// Output taken (only while collecting the results).
    Taken,
}

/// Drive every future to completion, starting them in order, and return their outputs in
/// the same order. Each wake-up polls the futures still running (a few: the queued items)
/// and starts up to [`START_PER_POLL`] fresh ones.
async fn join_in_order<F: Future>(futures: Vec<Pin<Box<F>>>) -> Vec<F::Output> {
    let mut slots: Vec<Slot<F>> = futures.into_iter().map(Slot::Running).collect();
    let mut running: Vec<usize> = Vec::new();
    let mut next = 0;
    std::future::poll_fn(move |cx: &mut Context<'_>| {
        running.retain(|&i| !poll_slot(&mut slots[i], cx));
        let mut started = 0;
        while next < slots.len() && started < START_PER_POLL {
            if !poll_slot(&mut slots[next], cx) {
                running.push(next);
            }
            next += 1;
            started += 1;
        }
        if next < slots.len() {
            // More to start: let other tasks run first, then come straight back.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if !running.is_empty() {
            return Poll::Pending;
        }
        Poll::Ready(
            slots
                .iter_mut()
                .filter_map(|s| match std::mem::replace(s, Slot::Taken) {
                    Slot::Done(out) => Some(out),
                    _ => None,
                })
                .collect(),
        )
    })
    .await
}

/// Poll a running slot; true when it is done (its output stored in the slot).
fn poll_slot<F: Future>(slot: &mut Slot<F>, cx: &mut Context<'_>) -> bool {
    let Slot::Running(f) = slot else {
        return true;
    };
    match f.as_mut().poll(cx) {
        Poll::Ready(out) => {
            *slot = Slot::Done(out);
            true
        }
        Poll::Pending => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Outputs come back in input order whatever order the futures finish in, and a
    /// waiting future does not delay the ones after it: item 0 waits for a signal that only
    /// the last item sends, so a sequential join would never finish (bounded by a timeout).
    #[tokio::test]
    async fn join_keeps_order_and_runs_concurrently() {
        let n = 200;
        let last_done = std::sync::Arc::new(tokio::sync::Notify::new());
        let futures = (0..n)
            .map(|i| {
                let last_done = std::sync::Arc::clone(&last_done);
                Box::pin(async move {
                    if i == 0 {
                        last_done.notified().await;
                    } else if i == n - 1 {
                        last_done.notify_one();
                    } else if i % 3 == 0 {
                        tokio::task::yield_now().await;
                    }
                    i
                })
            })
            .collect();
        let out = tokio::time::timeout(Duration::from_secs(10), join_in_order(futures))
            .await
            .expect("a waiting item must not block the others");
        assert_eq!(out, (0..n).collect::<Vec<_>>());
    }

    /// An empty join is ready at once.
    #[tokio::test]
    async fn empty_join() {
        let out: Vec<()> = join_in_order::<std::future::Ready<()>>(Vec::new()).await;
        assert!(out.is_empty());
    }

    /// An invalid field gets the item's index; other errors keep their code and message.
    #[test]
    fn item_errors_name_the_index() {
        let e = item_error(
            3,
            &PermitError::Invalid {
                field: "cost.tokens".into(),
                message: "bad".into(),
            }
            .into(),
        );
        assert_eq!(e.code, tonic::Code::InvalidArgument as i32);
        assert_eq!(e.message, "requests[3].cost.tokens: bad");
        let e = item_error(0, &PermitError::UnknownResource("x".into()).into());
        assert_eq!(e.code, tonic::Code::NotFound as i32);
        assert_eq!(e.message, "unknown resource \"x\"");
    }
}

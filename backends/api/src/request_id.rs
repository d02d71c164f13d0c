//! The id of the client request being served, for adapters to pass on to their backend
//! (a header, a protocol field) so one request can be followed across systems.
//!
//! The gateway's HTTP edge sets it (from `x-request-id`, or a new one) around each request;
//! an adapter reads it with [`current`] without it being a parameter of every trait method.
//! Work spawned onto other tasks does not inherit it.

use std::future::Future;
use std::sync::Arc;

tokio::task_local! {
    static REQUEST_ID: Arc<str>;
}

/// The id of the request this task is serving, if any.
pub fn current() -> Option<Arc<str>> {
    REQUEST_ID.try_with(Arc::clone).ok()
}

/// Runs `fut` with `id` as the current request id.
pub async fn scope<F: Future>(id: Arc<str>, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

/// [`scope`] as a nameable future, for a hand-written service future to hold unboxed.
pub fn scoped<F: Future>(id: Arc<str>, fut: F) -> Scoped<F> {
    REQUEST_ID.scope(id, fut)
}

/// The future [`scoped`] returns.
pub type Scoped<F> = tokio::task::futures::TaskLocalFuture<Arc<str>, F>;

#[cfg(test)]
mod tests {
    #[test]
    fn set_inside_the_scope_only() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(super::current(), None);
        let seen = rt.block_on(super::scope("abc".into(), async { super::current() }));
        assert_eq!(seen.as_deref(), Some("abc"));
    }
}

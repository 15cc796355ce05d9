//! proxflow-benches' server loop on paused time: its connection timer, its graceful shutdown,
//! and the whole loop through a real server on 127.0.0.1. They live in this package because
//! paused time needs tokio's `test-util`, which must not reach proxflow-benches' criterion
//! benches.

/// `ConnectionTimer`: every deadline of a connection on one tokio timer.
mod timer {
    use std::future::poll_fn;
    use std::pin::Pin;
    use std::task::Poll;
    use std::time::Duration;

    use hyper::rt::{Sleep, Timer};
    use proxflow_benches::server::timer::ConnectionTimer;

    /// Polls once: ready or not.
    async fn ready(sleep: &mut Pin<Box<dyn Sleep>>) -> bool {
        poll_fn(|cx| Poll::Ready(sleep.as_mut().poll(cx).is_ready())).await
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_share_one_alarm_and_each_ends_on_time() {
        let timer = ConnectionTimer::new();
        let start = timer.now();
        let mut first = timer.sleep_until(start + Duration::from_secs(30));
        assert!(!ready(&mut first).await);
        // The first head arrived at 10 s: its deadline is dropped, the next one is later.
        tokio::time::advance(Duration::from_secs(10)).await;
        drop(first);
        let mut second = timer.sleep(Duration::from_secs(30));
        assert!(!ready(&mut second).await);
        // The alarm still rings at 30 s, for the first deadline; the second waits on.
        tokio::time::advance(Duration::from_secs(21)).await;
        assert!(!ready(&mut second).await, "at 31 s");
        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(!ready(&mut second).await, "at 39 s");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(ready(&mut second).await, "at 40 s");
        // An earlier deadline than the alarm's moves the alarm.
        let mut late = timer.sleep(Duration::from_secs(60));
        assert!(!ready(&mut late).await);
        let mut early = timer.sleep(Duration::from_secs(5));
        assert!(!ready(&mut early).await);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(ready(&mut early).await);
        assert!(!ready(&mut late).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_task_is_woken_at_its_deadline() {
        let timer = ConnectionTimer::new();
        let mut first = timer.sleep(Duration::from_secs(30));
        assert!(!ready(&mut first).await);
        drop(first);
        let started = tokio::time::Instant::now();
        // With paused time the runtime jumps to the next timer; awaiting returns only when the
        // alarm, moved past its first ring, wakes the task at the later deadline.
        tokio::time::advance(Duration::from_secs(5)).await;
        // A deadline that never rings fails at the limit instead of hanging.
        tokio::time::timeout(
            Duration::from_secs(3600),
            timer.sleep(Duration::from_secs(30)),
        )
        .await
        .expect("woken at the deadline");
        assert_eq!(started.elapsed(), Duration::from_secs(35));
    }
}

/// `Shutdown`: one flag read by each connection when it wakes.
mod shutdown {
    use std::future::poll_fn;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Poll;
    use std::time::Duration;

    use proxflow_benches::server::shutdown::{Shutdown, Watcher};
    use tokio::time::Instant;

    /// A connection's task: pending until told to close, then `finish` more of work.
    fn connection(
        mut watcher: Watcher,
        finish: Duration,
        polls: Arc<AtomicUsize>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            poll_fn(|cx| {
                polls.fetch_add(1, Ordering::SeqCst);
                if watcher.poll_closing(cx) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            let told_again = poll_fn(|cx| Poll::Ready(watcher.poll_closing(cx))).await;
            assert!(!told_again, "told once only");
            tokio::time::sleep(finish).await;
            drop(watcher);
        })
    }

    /// Shuts down, failing instead of hanging if a connection is never told or never counted
    /// out (paused time jumps to the limit when nothing else can run).
    async fn shut_down(shutdown: Shutdown) {
        tokio::time::timeout(Duration::from_secs(60), shutdown.shutdown())
            .await
            .expect("every connection was told and has ended");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_wakes_idle_connections_and_waits_for_the_slowest() {
        let shutdown = Shutdown::new();
        let polls = Arc::new(AtomicUsize::new(0));
        let fast = connection(shutdown.watcher(), Duration::from_secs(1), polls.clone());
        let slow = connection(shutdown.watcher(), Duration::from_secs(3), polls.clone());
        tokio::task::yield_now().await;
        assert_eq!(
            polls.load(Ordering::SeqCst),
            2,
            "each polled once, then idle"
        );
        assert_eq!(shutdown.open_connections(), 2);

        let started = Instant::now();
        shut_down(shutdown).await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert_eq!(
            polls.load(Ordering::SeqCst),
            4,
            "each woken once by the shutdown"
        );
        fast.await.unwrap();
        slow.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_not_yet_polled_is_waited_for_and_told_at_once() {
        let shutdown = Shutdown::new();
        let watcher = shutdown.watcher();
        let polls = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let closing = shut_down(shutdown);
        // Spawned after shutdown began: its first poll sees the flag.
        let task = connection(watcher, Duration::from_secs(2), polls.clone());
        closing.await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_waker_is_the_one_woken() {
        let shutdown = Shutdown::new();
        let mut watcher = shutdown.watcher();
        // Polled first from this task, then moved to another one.
        let told = poll_fn(|cx| Poll::Ready(watcher.poll_closing(cx))).await;
        assert!(!told);
        let polls = Arc::new(AtomicUsize::new(0));
        let task = connection(watcher, Duration::ZERO, polls.clone());
        tokio::task::yield_now().await;
        shut_down(shutdown).await;
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_without_connections_returns_at_once() {
        let started = Instant::now();
        shut_down(Shutdown::new()).await;
        let shutdown = Shutdown::new();
        drop(shutdown.watcher());
        assert_eq!(shutdown.open_connections(), 0);
        shut_down(shutdown).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}

/// `serve_connections`: its header-read timeout and its half-close option.
mod serve {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use http::Response;
    use http_body_util::Full;
    use proxflow_benches::server::{serve_connections, Connections};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::Notify;
    use tokio::time::Instant;

    /// Sends a whole request and reads its answer.
    async fn ask(client: &mut TcpStream) {
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        while !answer.ends_with(b"\r\n\r\nok") {
            let mut chunk = [0; 512];
            let read = client.read(&mut chunk).await.unwrap();
            assert_ne!(read, 0, "closed before the answer: {answer:?}");
            answer.extend_from_slice(&chunk[..read]);
        }
        assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unfinished_request_head_closes_the_connection_30_s_after_the_last_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ok = tower::service_fn(|_| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        });
        tokio::spawn(serve_connections(
            listener,
            Connections::default(),
            move |_| ok,
        ));

        let mut client = TcpStream::connect(addr).await.unwrap();
        ask(&mut client).await;
        // A request 20 s later on the kept-alive connection: the wait for its head counts from the
        // first answer, so the timeout must not have been spent on it.
        tokio::time::sleep(Duration::from_secs(20)).await;
        ask(&mut client).await;
        let answered = Instant::now();

        // Twenty more quiet seconds, then a head that never ends.
        tokio::time::sleep(Duration::from_secs(20)).await;
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(120), client.read_to_end(&mut rest))
            .await
            .expect("the connection is closed")
            .unwrap();
        let waited = answered.elapsed();
        assert!(
            (Duration::from_secs(30)..Duration::from_millis(30_010)).contains(&waited),
            "closed {waited:?} after the last answer"
        );
    }

    /// What a client gets that sends a request and then shuts its sending side, from a handler
    /// that answers only once the server has seen that shutdown.
    async fn answer_after_half_close(options: Connections) -> Vec<u8> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let release = Arc::new(Notify::new());
        let handler = {
            let release = Arc::clone(&release);
            tower::service_fn(move |_| {
                let release = Arc::clone(&release);
                async move {
                    release.notified().await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            })
        };
        tokio::spawn(serve_connections(listener, options, move |_| {
            handler.clone()
        }));

        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        // On paused time the runtime polls its sockets before it moves the clock: by the end of
        // this sleep the server has read the request and seen the shutdown.
        tokio::time::sleep(Duration::from_secs(1)).await;
        release.notify_one();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), client.read_to_end(&mut answer))
            .await
            .expect("the server closes the connection")
            .unwrap();
        answer
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_half_closes_is_answered_only_with_half_close_on() {
        let answer = answer_after_half_close(Connections { half_close: true }).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 200 OK\r\n") && answer.ends_with(b"\r\n\r\nok"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        // The default: the handler is dropped when the client goes, and nothing is answered.
        let answer = answer_after_half_close(Connections::default()).await;
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    }
}

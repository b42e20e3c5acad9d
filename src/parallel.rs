//! Numbered jobs shared out over scoped worker threads, each taking the next job when it is
//! free, the results in job order: what the KMeans runs and the intervals' (subset, cluster)
//! pairs are spread over. A worker's panic goes on in the caller ([`joined`], which every
//! scoped thread's join goes through).

/// What a joined thread returned, or its panic raised again in the caller.
pub fn joined<T>(result: std::thread::Result<T>) -> T {
    match result {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// `jobs` computed on up to `threads` threads, in job order.
pub fn jobs<T: Send>(jobs: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = threads.clamp(1, jobs.max(1));
    if threads == 1 {
        return (0..jobs).map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<(usize, T)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if j >= jobs {
                            break mine;
                        }
                        mine.push((j, f(j)));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| joined(w.join())).collect()
    });
    out.sort_unstable_by_key(|(j, _)| *j);
    out.into_iter().map(|(_, t)| t).collect()
}

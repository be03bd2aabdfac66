//! A small team of worker threads that spin between the fast path's parallel loops.
//!
//! A forward pass of ResNet152V2 is a few hundred short parallel loops (one or two per layer).
//! Rayon's idle workers go to sleep within microseconds, so each loop woke them again through
//! the kernel, and on a virtual machine a woken vCPU can take tens of microseconds to run.
//! The team's helpers instead spin for [`SPIN`] after each loop (as OpenMP and ONNX Runtime
//! workers do) and only then sleep; the calling thread takes part in every loop.
//!
//! One loop runs at a time: a call made while the team is busy (another thread's forward pass,
//! or a loop body that itself asks for a loop) runs on rayon instead.

use rayon::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a helper spins for the next loop before it sleeps.
const SPIN: Duration = Duration::from_millis(2);

/// One parallel loop: `f(i)` for every `i < n`, indices handed out one at a time.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
    panicked: AtomicBool,
}

impl Job<'_> {
    fn run(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.n {
                return;
            }
            if catch_unwind(AssertUnwindSafe(|| (self.f)(i))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// State shared by the caller and the helpers.
struct Shared {
    /// Bumped (under `sleep`) to publish a job.
    epoch: AtomicU64,
    /// The current job, valid while `pending > 0`.
    job: AtomicPtr<Job<'static>>,
    /// Helpers that have not yet finished the current job.
    pending: AtomicUsize,
    /// Number of helpers asleep, guarded by the mutex; they wait on `wake`.
    sleep: Mutex<usize>,
    wake: Condvar,
}

struct Team {
    shared: Arc<Shared>,
    helpers: usize,
    /// Held by the thread running a loop.
    busy: Mutex<()>,
}

fn helper(shared: Arc<Shared>) {
    let mut seen = 0u64;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let epoch = shared.epoch.load(Ordering::Acquire);
            if epoch != seen {
                seen = epoch;
                break;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && start.elapsed() > SPIN {
                let mut asleep = shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
                *asleep += 1;
                while shared.epoch.load(Ordering::Acquire) == seen {
                    asleep = shared.wake.wait(asleep).unwrap_or_else(|e| e.into_inner());
                }
                *asleep -= 1;
            } else {
                std::hint::spin_loop();
            }
        }
        let job = shared.job.load(Ordering::Acquire);
        // SAFETY: the caller published `job` before bumping the epoch and keeps it alive
        // until every helper has decremented `pending` below.
        if let Some(job) = unsafe { job.as_ref() } {
            job.run();
        }
        shared.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

fn team() -> Option<&'static Team> {
    static TEAM: OnceLock<Option<Team>> = OnceLock::new();
    TEAM.get_or_init(|| {
        let helpers = rayon::current_num_threads().saturating_sub(1);
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            pending: AtomicUsize::new(0),
            sleep: Mutex::new(0),
            wake: Condvar::new(),
        });
        for i in 0..helpers {
            let s = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("fracture-fast-{i}"))
                .spawn(move || helper(s));
            if spawned.is_err() {
                // Helpers already started keep waiting for an epoch that never comes.
                return None;
            }
        }
        Some(Team {
            shared,
            helpers,
            busy: Mutex::new(()),
        })
    })
    .as_ref()
}

/// Run `f(i)` for every `i < n` on the team (the calling thread included), or on rayon when
/// the team is busy or could not be started. Panics if `f` panicked.
pub(crate) fn for_each(n: usize, f: impl Fn(usize) + Sync) {
    if n == 0 {
        return;
    }
    let Some(team) = team() else {
        return (0..n).into_par_iter().for_each(&f);
    };
    let busy = match team.busy.try_lock() {
        Ok(guard) => guard,
        // Never poisoned by a loop body (those panics are caught), but stay usable anyway.
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return (0..n).into_par_iter().for_each(&f),
    };
    if team.helpers == 0 || n == 1 {
        return (0..n).for_each(f);
    }
    let job = Job {
        f: &f,
        n,
        next: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
    };
    let shared = &team.shared;
    // SAFETY (lifetime): the pointer is only dereferenced by helpers between the epoch bump
    // and their `pending` decrement, and this function waits for `pending == 0` before `job`
    // goes out of scope.
    let ptr = &job as *const Job<'_> as *mut Job<'static>;
    shared.job.store(ptr, Ordering::Release);
    shared.pending.store(team.helpers, Ordering::Release);
    let asleep = {
        let guard = shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
        shared.epoch.fetch_add(1, Ordering::AcqRel);
        *guard
    };
    if asleep > 0 {
        shared.wake.notify_all();
    }
    job.run();
    let mut spins = 0u32;
    while shared.pending.load(Ordering::Acquire) > 0 {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(1024) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    shared.job.store(std::ptr::null_mut(), Ordering::Release);
    drop(busy);
    if job.panicked.load(Ordering::Relaxed) {
        panic!("a parallel loop of a CPU fast path (ResNetV2 or EfficientNet-Lite) panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_runs_exactly_once() {
        for n in [0usize, 1, 2, 3, 17, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            for_each(n, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "n = {n}"
            );
        }
    }

    #[test]
    fn concurrent_and_nested_loops_fall_back_and_finish() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        for_each(8, |_| {
                            for_each(3, |_| {
                                total.fetch_add(1, Ordering::Relaxed);
                            });
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 50 * 8 * 3);
    }

    #[test]
    fn a_panicking_body_panics_the_caller_and_the_team_still_works() {
        let result = catch_unwind(|| {
            for_each(10, |i| {
                if i == 7 {
                    panic!("boom");
                }
            })
        });
        assert!(result.is_err());
        let count = AtomicUsize::new(0);
        for_each(10, |_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn loops_after_the_helpers_fell_asleep_still_run() {
        let count = AtomicUsize::new(0);
        for_each(4, |_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        std::thread::sleep(SPIN * 5);
        for_each(4, |_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 8);
    }
}

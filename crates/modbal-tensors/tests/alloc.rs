//! `alloc::retain_freed_memory`: a large block freed by a worker thread is reused by the next
//! allocation of the same size without page faults (the training loop and the kernels run on
//! worker threads of rayon's pool). Reference: the kernel's count of minor page faults of the
//! calling thread (`getrusage(RUSAGE_THREAD)`); touching fresh memory faults once per 4 KiB page.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn minor_faults() -> i64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut u), 0);
        u.ru_minflt
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn a_worker_threads_large_block_is_reused_without_page_faults() {
    assert!(modbal_tensors::alloc::retain_freed_memory());
    // Larger than glibc's per-thread heaps (64 MiB), like small-cnn's activations.
    let n = 96 << 20;
    let pages = (n / 4096) as i64;
    std::thread::spawn(move || {
        let touch = |v: &mut Vec<u8>| {
            let f0 = minor_faults();
            v.resize(n, 1);
            std::hint::black_box(&v);
            minor_faults() - f0
        };
        let mut a = Vec::with_capacity(n);
        let first = touch(&mut a);
        drop(a);
        let mut b = Vec::with_capacity(n);
        let second = touch(&mut b);
        eprintln!("minor faults touching {pages} pages: first {first}, after reuse {second}");
        assert!(
            first > pages / 2,
            "the first touch should fault (got {first})"
        );
        assert!(
            second < pages / 20,
            "the freed block was not reused: {second} faults for {pages} pages"
        );
    })
    .join()
    .unwrap();
}

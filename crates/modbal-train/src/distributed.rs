//! Data-parallel training building blocks (PyTorch DDP style).
//!
//! PyTorch's `DistributedDataParallel` runs one process (rank) per GPU, each holding a full
//! replica of the model. Each step every rank runs forward and backward on its own shard of the
//! global batch, the gradients are summed across ranks and divided by the number of ranks
//! (all-reduce, in flat buckets), and every rank applies the identical averaged update, so the
//! replicas never drift apart. Non-trainable buffers (BatchNorm running statistics) are
//! overwritten with rank 0's before each forward (`broadcast_buffers=True`), and the
//! `DistributedSampler` hands each rank a disjoint slice of one seeded epoch order.
//!
//! The pieces here, and what they stand for:
//!
//! * [`Collective`]: the communication primitives (sum all-reduce, broadcast, barrier). Every
//!   call is collective: all ranks make the same sequence of calls with matching shapes.
//! * [`LocalCollective`]: a CPU stand-in whose ranks are threads of one process. It sums in rank
//!   order 0..n (bitwise identical on every rank, independent of thread timing), reports
//!   mismatched calls by name instead of deadlocking, and makes the other ranks fail when one
//!   rank drops its handle or errors, or when a call waits longer than its timeout.
//! * `NcclCollective` (feature `nccl`): the same trait over NCCL for one process per GPU.
//! * [`shard_batches`] / [`shard_order`]: the sampler. Global step k covers exactly the
//!   single-process batch k of size `world·B`; rank r takes its r-th contiguous part.
//! * [`AllReduced`]: an [`Optimizer`] wrapper that averages the gradients over the ranks (one
//!   flat buffer per step) before the inner step. Wrap it around gradient clipping, since DDP
//!   clips the already averaged gradient.
//! * [`broadcast_buffers`] (and [`broadcast_state`] for the initial replica sync).
//!
//! With equal per-rank batch sizes at every step (which the sampler guarantees) and a loss that
//! is a per-sample mean, the average of the ranks' mean gradients is the mean gradient of the
//! whole global batch, so N ranks with batch B follow the same trajectory as one process with
//! batch N·B (up to float summation order). BatchNorm breaks this equivalence (its statistics
//! are per rank), as in PyTorch without `SyncBatchNorm`.

use candle_core::{backprop::GradStore, DType, Device, Result, Tensor, Var};
use modbal_tensors::{Optimizer, ParamStore};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[cfg(feature = "nccl")]
pub use nccl::NcclCollective;

/// How long a [`LocalCollective`] call waits for the other ranks by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Communication between the ranks of a data-parallel group.
///
/// Every method is collective: each rank must make the same sequence of calls, with tensors of
/// the same shape and dtype at each position. A rank blocks until all ranks have made the call.
pub trait Collective: Send + Sync {
    /// This rank, in `0..world_size()`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn world_size(&self) -> usize;
    /// The element-wise sum over all ranks of `t` (same shape and dtype on every rank); every
    /// rank receives the same result, on the device of its `t`.
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor>;
    /// Rank `root`'s `t`, on every rank (the other ranks' `t` give the shape and dtype only).
    fn broadcast(&self, t: &Tensor, root: usize) -> Result<Tensor>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
}

// ---------------------------------------------------------------------------------------------
// LocalCollective

#[derive(Clone, Copy, Debug, PartialEq)]
enum OpKind {
    AllReduceSum,
    Broadcast { root: usize },
    Barrier,
}

/// What one rank asked for at one sequence number (compared across ranks).
#[derive(Clone, Debug, PartialEq)]
struct CallDesc {
    op: OpKind,
    dtype: Option<DType>,
    dims: Vec<usize>,
}

impl CallDesc {
    fn of(op: OpKind, t: Option<&Tensor>) -> Self {
        Self {
            op,
            dtype: t.map(|t| t.dtype()),
            dims: t.map(|t| t.dims().to_vec()).unwrap_or_default(),
        }
    }
}

impl fmt::Display for CallDesc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.dtype {
            Some(d) => format!("{} {:?}", d.as_str(), self.dims),
            None => String::new(),
        };
        match self.op {
            OpKind::AllReduceSum => write!(f, "all_reduce_sum({what})"),
            OpKind::Broadcast { root } => write!(f, "broadcast(root {root}, {what})"),
            OpKind::Barrier => write!(f, "barrier()"),
        }
    }
}

type Outcome = std::result::Result<Option<Tensor>, String>;

/// One collective call, identified by its sequence number.
struct Round {
    /// Per rank: its call and its tensor (a CPU copy).
    calls: Vec<Option<(CallDesc, Option<Tensor>)>>,
    arrived: usize,
    outcome: Option<Outcome>,
    /// Ranks that have yet to take the outcome (the round is removed when this reaches 0).
    unread: usize,
}

struct GroupState {
    rounds: BTreeMap<u64, Round>,
    /// Per rank: why it left the group (dropped its handle, or a call of it failed).
    left: Vec<Option<String>>,
}

struct Group {
    n: usize,
    timeout: Duration,
    state: Mutex<GroupState>,
    cv: Condvar,
}

impl Group {
    fn lock(&self) -> MutexGuard<'_, GroupState> {
        // A panicking rank never leaves the state half-updated in a way that matters here: the
        // panic drops its handle, which marks it as gone.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The CPU stand-in for a process group: `n` handles, one per thread of one process.
///
/// Results are computed by the last rank to arrive, on CPU, in rank order, so they are
/// bitwise identical on every rank and across runs. A mismatch between the ranks' calls at the
/// same sequence number is an error (naming both calls) on every rank. A rank whose handle is
/// dropped (its thread returned or panicked) or whose call failed makes every later call of the
/// others fail; a call that waits longer than the group's timeout fails too.
pub struct LocalCollective {
    rank: usize,
    seq: AtomicU64,
    group: Arc<Group>,
}

impl fmt::Debug for LocalCollective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCollective")
            .field("rank", &self.rank)
            .field("world_size", &self.group.n)
            .finish()
    }
}

impl LocalCollective {
    /// A group of `n` ranks (handle r is rank r) with the [`DEFAULT_TIMEOUT`].
    pub fn group(n: usize) -> Vec<LocalCollective> {
        Self::group_with_timeout(n, DEFAULT_TIMEOUT)
    }

    /// A group of `n` ranks whose calls fail after waiting `timeout` for the others.
    pub fn group_with_timeout(n: usize, timeout: Duration) -> Vec<LocalCollective> {
        let group = Arc::new(Group {
            n,
            timeout,
            state: Mutex::new(GroupState {
                rounds: BTreeMap::new(),
                left: vec![None; n],
            }),
            cv: Condvar::new(),
        });
        (0..n)
            .map(|rank| LocalCollective {
                rank,
                seq: AtomicU64::new(0),
                group: group.clone(),
            })
            .collect()
    }

    fn leave(&self, st: &mut GroupState, why: String) {
        if st.left[self.rank].is_none() {
            st.left[self.rank] = Some(why);
        }
        self.group.cv.notify_all();
    }

    fn call(&self, op: OpKind, t: Option<&Tensor>) -> Result<Option<Tensor>> {
        let (n, rank) = (self.group.n, self.rank);
        let desc = CallDesc::of(op, t);
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let mine = match t {
            Some(t) => Some(t.to_device(&Device::Cpu)?.copy()?),
            None => None,
        };
        let mut st = self.group.lock();
        if let Some(why) = &st.left[rank] {
            candle_core::bail!(
                "collective #{seq} {desc} on rank {rank}: this rank already left the group ({why})"
            );
        }
        let round = st.rounds.entry(seq).or_insert_with(|| Round {
            calls: vec![None; n],
            arrived: 0,
            outcome: None,
            unread: 0,
        });
        round.calls[rank] = Some((desc.clone(), mine));
        round.arrived += 1;
        // A round already failed (a rank gave up waiting) keeps its error for late arrivals.
        if round.arrived == n && round.outcome.is_none() {
            round.outcome = Some(complete(seq, &round.calls));
            round.unread = n;
            // The tensors are no longer needed.
            round.calls.iter_mut().for_each(|c| {
                if let Some((_, t)) = c {
                    *t = None;
                }
            });
            self.group.cv.notify_all();
        }
        let deadline = Instant::now() + self.group.timeout;
        loop {
            let GroupState { rounds, left } = &mut *st;
            let round = rounds
                .get_mut(&seq)
                .expect("a round lives until all ranks read it");
            if let Some(out) = &round.outcome {
                let out = out.clone();
                round.unread -= 1;
                if round.unread == 0 {
                    rounds.remove(&seq);
                }
                if let Err(e) = &out {
                    let why = format!("its collective #{seq} failed: {e}");
                    self.leave(&mut st, why);
                }
                let out = out.map_err(candle_core::Error::Msg)?;
                return match (out, t) {
                    // A private copy per rank, on the caller's device.
                    (Some(r), Some(t)) => Ok(Some(r.copy()?.to_device(t.device())?)),
                    (r, _) => Ok(r),
                };
            }
            let gone = (0..n).find_map(|r| match (&round.calls[r], &left[r]) {
                (None, Some(why)) => Some((r, why.clone())),
                _ => None,
            });
            let now = Instant::now();
            let err = if let Some((r, why)) = gone {
                Some(format!(
                    "collective #{seq} {desc} on rank {rank}: rank {r} left the group before \
                     making this call ({why})"
                ))
            } else if now >= deadline {
                let missing: Vec<usize> = (0..n).filter(|&r| round.calls[r].is_none()).collect();
                Some(format!(
                    "collective #{seq} {desc} on rank {rank}: timed out after {:?} waiting for \
                     ranks {missing:?} (a rank stopped calling collectives, or the ranks' call \
                     sequences diverged)",
                    self.group.timeout
                ))
            } else {
                None
            };
            if let Some(e) = err {
                // The round fails for every rank, including those that arrive later.
                round.outcome = Some(Err(e.clone()));
                round.unread = n - 1;
                if round.unread == 0 {
                    rounds.remove(&seq);
                }
                self.leave(&mut st, format!("a call of it failed: {e}"));
                return Err(candle_core::Error::Msg(e));
            }
            st = self
                .group
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The outcome of a round whose ranks have all arrived: the checks, then the sum (in rank
/// order), the root's tensor, or nothing.
fn complete(seq: u64, calls: &[Option<(CallDesc, Option<Tensor>)>]) -> Outcome {
    let calls: Vec<&(CallDesc, Option<Tensor>)> = calls
        .iter()
        .map(|c| c.as_ref().expect("complete only once all ranks arrived"))
        .collect();
    let d0 = &calls[0].0;
    for (r, (d, _)) in calls.iter().enumerate().skip(1) {
        if d != d0 {
            return Err(format!(
                "collective #{seq}: mismatched calls: rank 0 called {d0} but rank {r} called {d}"
            ));
        }
    }
    let fail = |e: candle_core::Error| format!("collective #{seq} {d0}: {e}");
    match d0.op {
        OpKind::Barrier => Ok(None),
        OpKind::Broadcast { root } => {
            if root >= calls.len() {
                return Err(format!(
                    "collective #{seq} {d0}: root {root} is not a rank of a group of {}",
                    calls.len()
                ));
            }
            Ok(calls[root].1.clone())
        }
        OpKind::AllReduceSum => {
            let mut ts = calls.iter().map(|(_, t)| t.as_ref().expect("a tensor"));
            let mut acc = ts.next().expect("a group has a rank").clone();
            for t in ts {
                acc = (&acc + t).map_err(fail)?;
            }
            Ok(Some(acc))
        }
    }
}

impl Drop for LocalCollective {
    fn drop(&mut self) {
        let mut st = self.group.lock();
        let why = format!("rank {} dropped its handle", self.rank);
        self.leave(&mut st, why);
    }
}

impl Collective for LocalCollective {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.group.n
    }
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        Ok(self
            .call(OpKind::AllReduceSum, Some(t))?
            .expect("an all-reduce has a result"))
    }
    fn broadcast(&self, t: &Tensor, root: usize) -> Result<Tensor> {
        Ok(self
            .call(OpKind::Broadcast { root }, Some(t))?
            .expect("a broadcast has a result"))
    }
    fn barrier(&self) -> Result<()> {
        self.call(OpKind::Barrier, None).map(|_| ())
    }
}

// ---------------------------------------------------------------------------------------------
// Sampler

/// The epoch order padded to a multiple of `world` by repeating its leading elements
/// (cyclically if it is shorter than the padding), as torch's `DistributedSampler` does with
/// `drop_last=False`.
fn padded_order(order: &[usize], world: usize) -> Vec<usize> {
    let n = order.len();
    let pad = (world - n % world) % world;
    let mut v = order.to_vec();
    v.extend((0..pad).map(|i| order[i % n]));
    v
}

fn check_shard_args(order: &[usize], world: usize, batch: usize, rank: usize) -> Result<()> {
    if world == 0 {
        candle_core::bail!("shard: world size must be at least 1");
    }
    if rank >= world {
        candle_core::bail!("shard: rank {rank} is not a rank of a group of {world}");
    }
    if batch == 0 {
        candle_core::bail!("shard: per-rank batch size must be at least 1");
    }
    if order.is_empty() {
        candle_core::bail!("shard: the epoch order is empty (nothing to train on)");
    }
    Ok(())
}

/// Rank `rank`'s batches of one epoch, for `world` ranks with `per_rank_batch` (B) samples
/// each per step.
///
/// The order is first padded to a multiple of `world` by repeating its leading elements (as
/// torch's `DistributedSampler` with `drop_last=False`). Global step k then covers the padded
/// order's `[k·world·B, (k+1)·world·B)`, which is the single-process batch k of size `world·B`
/// (the last one extended by the padding), and rank r takes the r-th contiguous B-slice. The
/// last, shorter chunk (a multiple of `world` long) is split into `world` equal parts. So every
/// rank has the same number of steps and, at each step, the same batch size as the others:
/// the plain average of the ranks' mean gradients is the mean gradient of the step's global
/// batch. Exact equivalence with single-process training needs no padding (the epoch's length a
/// multiple of `world`); otherwise the last step sees a few samples twice.
///
/// Errors: an empty order, `world` 0, `per_rank_batch` 0, `rank >= world`.
pub fn shard_batches(
    order: &[usize],
    world: usize,
    per_rank_batch: usize,
    rank: usize,
) -> Result<Vec<Vec<usize>>> {
    check_shard_args(order, world, per_rank_batch, rank)?;
    let padded = padded_order(order, world);
    Ok(padded
        .chunks(world * per_rank_batch)
        .map(|chunk| {
            let part = chunk.len() / world;
            chunk[rank * part..(rank + 1) * part].to_vec()
        })
        .collect())
}

/// [`shard_batches`] concatenated: rank `rank`'s indices of the epoch in order. Cutting it into
/// batches of `per_rank_batch` (as `modbal_data::DataLoader` does) gives back exactly the
/// batches of [`shard_batches`], since only the last one can be shorter.
pub fn shard_order(
    order: &[usize],
    world: usize,
    per_rank_batch: usize,
    rank: usize,
) -> Result<Vec<usize>> {
    Ok(shard_batches(order, world, per_rank_batch, rank)?.concat())
}

// ---------------------------------------------------------------------------------------------
// Flat buffers

/// The dtype of a flat buffer over tensors of these dtypes: f64 if any is f64, else f32
/// (f16/bf16 values are widened to f32; f32 values to f64 in a mixed model, exactly).
fn buffer_dtype(dtypes: impl IntoIterator<Item = DType>) -> DType {
    if dtypes.into_iter().any(|d| d == DType::F64) {
        DType::F64
    } else {
        DType::F32
    }
}

/// One 1-D tensor of `dtype` holding the parts in order.
fn pack(parts: &[Tensor], dtype: DType) -> Result<Tensor> {
    let flat = parts
        .iter()
        .map(|t| t.flatten_all()?.to_dtype(dtype))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&flat, 0)
}

// ---------------------------------------------------------------------------------------------
// AllReduced

/// An [`Optimizer`] whose `step` first averages the gradients over the ranks (DDP semantics).
///
/// The gradients of `inner.vars()`, in that fixed order (identical on every rank), are packed
/// into one flat buffer, followed by one presence flag per variable (1 where this rank has a
/// gradient; a missing gradient contributes zeros). The buffer is all-reduced once and divided
/// by the world size. A variable that has a gradient on at least one rank gets the average (its
/// absent ranks counting as zero, as DDP with `find_unused_parameters`); one without a gradient
/// on any rank gets none, so the inner optimizer skips it on every rank.
///
/// The buffer's dtype is f64 if any variable is f64, else f32; each averaged gradient is cast
/// back to its variable's dtype. A non-finite gradient on one rank becomes non-finite on all,
/// so every rank's inner step refuses the update alike.
///
/// Every rank must call `step` the same number of times: the loop's methods call it once or
/// more per batch, and the sampler gives every rank the same number of batches. Put it outside
/// gradient clipping (`AllReduced(Clipped(inner))`), since DDP clips the averaged gradient.
pub struct AllReduced {
    inner: Box<dyn Optimizer>,
    collective: Arc<dyn Collective>,
}

impl AllReduced {
    pub fn new(inner: Box<dyn Optimizer>, collective: Arc<dyn Collective>) -> Self {
        Self { inner, collective }
    }

    /// The wrapped optimizer.
    pub fn into_inner(self) -> Box<dyn Optimizer> {
        self.inner
    }

    /// The averaged gradients of `inner.vars()` (what `step` hands to the inner optimizer).
    pub fn average(&self, grads: &GradStore) -> Result<GradStore> {
        let vars = self.inner.vars();
        let mut out = GradStore::default();
        if vars.is_empty() {
            return Ok(out);
        }
        let dtype = buffer_dtype(vars.iter().map(|(_, v)| v.dtype()));
        let device = vars[0].1.device().clone();
        let mut parts = Vec::with_capacity(vars.len() + 1);
        let mut present = Vec::with_capacity(vars.len());
        for (name, v) in vars {
            match grads.get(v.as_tensor()) {
                Some(g) => {
                    if g.dims() != v.dims() {
                        candle_core::bail!(
                            "gradient of {name:?} has shape {:?}, parameter {:?}",
                            g.dims(),
                            v.dims()
                        );
                    }
                    parts.push(g.detach().to_device(&device)?);
                    present.push(1f32);
                }
                None => {
                    parts.push(Tensor::zeros(v.elem_count(), dtype, &device)?);
                    present.push(0f32);
                }
            }
        }
        parts.push(Tensor::new(present, &device)?);
        let summed = self.collective.all_reduce_sum(&pack(&parts, dtype)?)?;
        let world = self.collective.world_size() as f64;
        let counts: Vec<f64> = summed
            .narrow(0, summed.dim(0)? - vars.len(), vars.len())?
            .to_dtype(DType::F64)?
            .to_vec1()?;
        let mut at = 0;
        for ((_, v), count) in vars.iter().zip(counts) {
            let len = v.elem_count();
            if count > 0.0 {
                let g = (summed.narrow(0, at, len)? / world)?
                    .reshape(v.dims())?
                    .to_dtype(v.dtype())?
                    .to_device(v.device())?;
                out.insert(v.as_tensor(), g);
            }
            at += len;
        }
        Ok(out)
    }
}

impl Optimizer for AllReduced {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let avg = self.average(grads)?;
        self.inner.step(&avg)
    }
    crate::clip::delegate_to_inner!();
}

// ---------------------------------------------------------------------------------------------
// Buffers and state

/// Overwrites `vars` (same names, shapes and order on every rank) with rank `root`'s values,
/// in one broadcast of a flat buffer. Returns the number of variables set (0 makes no call,
/// which is consistent since every rank has the same list).
pub fn broadcast_vars(c: &dyn Collective, vars: &[(String, Var)], root: usize) -> Result<usize> {
    if vars.is_empty() {
        return Ok(0);
    }
    let dtype = buffer_dtype(vars.iter().map(|(_, v)| v.dtype()));
    let device = vars[0].1.device().clone();
    let parts = vars
        .iter()
        .map(|(_, v)| v.as_tensor().detach().to_device(&device))
        .collect::<Result<Vec<_>>>()?;
    let got = c.broadcast(&pack(&parts, dtype)?, root)?;
    let mut at = 0;
    for (_, v) in vars {
        let len = v.elem_count();
        let t = got
            .narrow(0, at, len)?
            .reshape(v.dims())?
            .to_dtype(v.dtype())?
            .to_device(v.device())?;
        v.set(&t)?;
        at += len;
    }
    Ok(vars.len())
}

/// DDP's `broadcast_buffers=True`: overwrite the non-trainable entries of `params` (BatchNorm
/// running statistics) with rank 0's, before each training forward. Returns how many were set.
pub fn broadcast_buffers(c: &dyn Collective, params: &ParamStore) -> Result<usize> {
    broadcast_vars(c, &params.buffers(), 0)
}

/// Every entry of `params` (parameters and buffers) set to rank 0's: the replica sync DDP does
/// when it wraps a model, for ranks whose initialisation could differ.
pub fn broadcast_state(c: &dyn Collective, params: &ParamStore) -> Result<usize> {
    broadcast_vars(c, &params.all(), 0)
}

// ---------------------------------------------------------------------------------------------
// NCCL

#[cfg(feature = "nccl")]
mod nccl {
    //! [`Collective`] over NCCL: one process (or thread) per GPU, communicating on the candle
    //! device's own stream, so the collectives are ordered with the kernels around them.
    //!
    //! Untested in CI (it needs GPUs and nvcc). NCCL itself has no timeout here: if a rank dies
    //! mid-collective the others block inside NCCL, and the launcher must stop the group.

    use super::Collective;
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, ValidAsZeroBits};
    use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, NcclType, ReduceOp};
    use candle_core::cuda_backend::{CudaDType, CudaDevice};
    use candle_core::{
        bail, CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor,
    };
    use std::ffi::c_char;
    use std::path::Path;
    use std::sync::{Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    /// The communicator, movable between threads.
    struct CommCell(Comm);

    // SAFETY: an NCCL communicator may be used from any thread as long as calls on it do not
    // overlap; every use goes through the `Mutex` in `NcclCollective`.
    unsafe impl Send for CommCell {}

    fn nccl_err(
        what: &str,
    ) -> impl Fn(candle_core::cuda_backend::cudarc::nccl::result::NcclError) -> candle_core::Error + '_
    {
        move |e| candle_core::Error::Msg(format!("NCCL {what}: {e:?}"))
    }

    /// A rank of an NCCL group on one CUDA device.
    pub struct NcclCollective {
        comm: Mutex<CommCell>,
        rank: usize,
        world: usize,
        device: CudaDevice,
    }

    impl std::fmt::Debug for NcclCollective {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("NcclCollective")
                .field("rank", &self.rank)
                .field("world_size", &self.world)
                .finish()
        }
    }

    impl NcclCollective {
        /// Joins the group as `rank` of `world_size` on `device` (a CUDA device). Rank 0 creates
        /// the group's id and writes its 128 bytes to `id_file` (a temporary file renamed into
        /// place); the other ranks wait for that file up to `timeout`. Use a fresh path per
        /// run: a file left by an earlier run would be read as this run's id. Blocks until all
        /// ranks have joined.
        pub fn new(
            device: &Device,
            rank: usize,
            world_size: usize,
            id_file: &Path,
            timeout: Duration,
        ) -> Result<Self> {
            let Device::Cuda(dev) = device else {
                bail!("NCCL needs a CUDA device, got {device:?}");
            };
            if rank >= world_size {
                bail!("NCCL: rank {rank} is not a rank of a group of {world_size}");
            }
            let id = if rank == 0 {
                let id = Id::new().map_err(nccl_err("unique id"))?;
                write_id(id_file, &id)?;
                id
            } else {
                read_id(id_file, rank, timeout)?
            };
            let comm = Comm::from_rank(dev.cuda_stream(), rank, world_size, id)
                .map_err(nccl_err("init"))?;
            Ok(Self {
                comm: Mutex::new(CommCell(comm)),
                rank,
                world: world_size,
                device: dev.clone(),
            })
        }

        fn comm(&self) -> MutexGuard<'_, CommCell> {
            self.comm.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    fn write_id(path: &Path, id: &Id) -> Result<()> {
        let bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp{}", std::process::id()));
        let io = |e: std::io::Error| {
            candle_core::Error::Msg(format!("writing the NCCL id to {}: {e}", path.display()))
        };
        std::fs::write(&tmp, &bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    fn read_id(path: &Path, rank: usize, timeout: Duration) -> Result<Id> {
        let start = Instant::now();
        loop {
            match std::fs::read(path) {
                Ok(b) if b.len() == 128 => {
                    let mut raw = [0 as c_char; 128];
                    for (d, s) in raw.iter_mut().zip(b) {
                        *d = s as c_char;
                    }
                    return Ok(Id::uninit(raw));
                }
                Ok(b) => bail!(
                    "rank {rank}: {} holds {} bytes, not a 128-byte NCCL id",
                    path.display(),
                    b.len()
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => bail!("rank {rank}: reading the NCCL id {}: {e}", path.display()),
            }
            if start.elapsed() >= timeout {
                bail!(
                    "rank {rank}: no NCCL id at {} after {timeout:?} (rank 0 writes it: did rank 0 \
                     start, and do all ranks use the same path?)",
                    path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    enum Kind {
        AllReduceSum,
        Broadcast(usize),
    }

    /// One NCCL collective as a candle op: reads the input's contiguous range, writes a fresh
    /// device buffer of the same dtype and shape.
    struct NcclOp<'a> {
        comm: &'a Comm,
        kind: Kind,
    }

    impl NcclOp<'_> {
        fn run<T>(&self, s: &CudaStorage, a: usize, b: usize) -> Result<CudaStorage>
        where
            T: CudaDType + NcclType + DeviceRepr + ValidAsZeroBits,
        {
            let src = s.as_cuda_slice::<T>()?.slice(a..b);
            let mut dst = s.device.alloc_zeros::<T>(b - a)?;
            match self.kind {
                Kind::AllReduceSum => {
                    self.comm
                        .all_reduce(&src, &mut dst, &ReduceOp::Sum)
                        .map_err(nccl_err("all-reduce"))?;
                }
                Kind::Broadcast(root) => {
                    self.comm
                        .broadcast(Some(&src), &mut dst, root as i32)
                        .map_err(nccl_err("broadcast"))?;
                }
            }
            Ok(CudaStorage::wrap_cuda_slice(dst, s.device.clone()))
        }
    }

    impl CustomOp1 for NcclOp<'_> {
        fn name(&self) -> &'static str {
            "nccl-collective"
        }
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            bail!("NCCL collectives need CUDA tensors, got a CPU tensor")
        }
        fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
            let Some((a, b)) = l.contiguous_offsets() else {
                bail!("NCCL collectives need a contiguous tensor");
            };
            let out = match s.dtype() {
                DType::F32 => self.run::<f32>(s, a, b)?,
                DType::F64 => self.run::<f64>(s, a, b)?,
                DType::U32 => self.run::<u32>(s, a, b)?,
                dt => bail!("NCCL collectives: unsupported dtype {dt:?}"),
            };
            Ok((out, l.shape().clone()))
        }
    }

    impl Collective for NcclCollective {
        fn rank(&self) -> usize {
            self.rank
        }
        fn world_size(&self) -> usize {
            self.world
        }
        fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
            let c = self.comm();
            let op = NcclOp {
                comm: &c.0,
                kind: Kind::AllReduceSum,
            };
            t.contiguous()?.apply_op1_no_bwd(&op)
        }
        fn broadcast(&self, t: &Tensor, root: usize) -> Result<Tensor> {
            if root >= self.world {
                bail!(
                    "NCCL broadcast: root {root} is not a rank of a group of {}",
                    self.world
                );
            }
            let c = self.comm();
            let op = NcclOp {
                comm: &c.0,
                kind: Kind::Broadcast(root),
            };
            t.contiguous()?.apply_op1_no_bwd(&op)
        }
        fn barrier(&self) -> Result<()> {
            let c = self.comm();
            let mut one = self.device.alloc_zeros::<f32>(1)?;
            c.0.all_reduce_in_place(&mut one, &ReduceOp::Sum)
                .map_err(nccl_err("barrier"))?;
            self.device
                .cuda_stream()
                .synchronize()
                .map_err(|e| candle_core::Error::Msg(format!("NCCL barrier: {e:?}")))
        }
    }
}

//! [`Engine`]: the scheduler as an actor on its own OS thread.
//!
//! A forward pass is seconds of blocking CPU (or GPU-synchronising) work, so the scheduler loop
//! must not run on the async runtime's workers. Each loaded model gets one dedicated thread that
//! owns the [`Scheduler`] (and through it the executor); everything else talks to it through a
//! clonable [`Engine`] handle that wraps an unbounded command channel. The loop:
//!
//! - blocks on the channel while there is no work (no busy-waiting when idle);
//! - otherwise drains pending commands without blocking, then runs one [`Scheduler::step`], so
//!   new requests join the batch at the next iteration (continuous batching);
//! - publishes [`SchedulerStats`] on a `watch` channel after each step for metrics and load
//!   reports;
//! - exits when every handle is gone and the work is done, or at once on [`Engine::abort`].
//!
//! A request's tokens arrive on its [`SequenceStream`]. Dropping the stream cancels the sequence:
//! its `Drop` sends a cancel command, so the blocks are freed before the next step.

use tokio::sync::{mpsc, oneshot, watch};

use crate::executor::ModelExecutor;
use crate::scheduler::{
    EngineError, GenerateRequest, Scheduler, SchedulerConfig, SchedulerStats, SequenceEvent,
};

enum Command {
    Submit {
        request: GenerateRequest,
        events: mpsc::UnboundedSender<SequenceEvent>,
        reply: oneshot::Sender<Result<u64, EngineError>>,
    },
    Cancel(u64),
    Abort,
}

/// Handle to one model's scheduler thread; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    commands: mpsc::UnboundedSender<Command>,
    stats: watch::Receiver<SchedulerStats>,
    config: SchedulerConfig,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts the scheduler thread for `executor`.
    pub fn spawn(
        executor: Box<dyn ModelExecutor>,
        config: SchedulerConfig,
        name: &str,
    ) -> std::io::Result<Engine> {
        let (commands, receiver) = mpsc::unbounded_channel();
        let scheduler = Scheduler::new(executor, config.clone());
        let (stats_sender, stats) = watch::channel(scheduler.stats());
        std::thread::Builder::new()
            .name(format!("engine-{name}"))
            .spawn(move || run_loop(scheduler, receiver, stats_sender))?;
        Ok(Engine {
            commands,
            stats,
            config,
        })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Queues a request. Errors that need no model work (empty or over-long prompt, full
    /// queue) come back here; later ones arrive as [`SequenceEvent::Failed`].
    pub async fn submit(&self, request: GenerateRequest) -> Result<SequenceStream, EngineError> {
        let (events, receiver) = mpsc::unbounded_channel();
        let (reply, reply_receiver) = oneshot::channel();
        self.commands
            .send(Command::Submit {
                request,
                events,
                reply,
            })
            .map_err(|_| EngineError::ShuttingDown)?;
        let id = reply_receiver
            .await
            .map_err(|_| EngineError::ShuttingDown)??;
        Ok(SequenceStream {
            id,
            events: receiver,
            commands: self.commands.clone(),
            finished: false,
        })
    }

    /// The latest stats (updated after every step).
    pub fn stats(&self) -> SchedulerStats {
        *self.stats.borrow()
    }

    /// Waits until the stats satisfy `predicate` (tests and drain logic).
    pub async fn wait_for_stats(&self, predicate: impl Fn(&SchedulerStats) -> bool) {
        let mut stats = self.stats.clone();
        let _ = stats.wait_for(|current| predicate(current)).await;
    }

    /// Fails every sequence and stops the thread; used when the model is unloaded.
    pub fn abort(&self) {
        let _ = self.commands.send(Command::Abort);
    }
}

/// The events of one sequence. Dropping it cancels the sequence.
#[derive(Debug)]
pub struct SequenceStream {
    id: u64,
    events: mpsc::UnboundedReceiver<SequenceEvent>,
    commands: mpsc::UnboundedSender<Command>,
    finished: bool,
}

impl SequenceStream {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next event; None after the final one (or if the engine went away).
    pub async fn next(&mut self) -> Option<SequenceEvent> {
        if self.finished {
            return None;
        }
        let event = self.events.recv().await;
        if matches!(
            event,
            None | Some(SequenceEvent::Finished(_) | SequenceEvent::Failed(_))
        ) {
            self.finished = true;
        }
        event
    }
}

impl Drop for SequenceStream {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.commands.send(Command::Cancel(self.id));
        }
    }
}

fn run_loop(
    mut scheduler: Scheduler,
    mut commands: mpsc::UnboundedReceiver<Command>,
    stats: watch::Sender<SchedulerStats>,
) {
    let mut handles_gone = false;
    loop {
        if !scheduler.has_work() {
            if handles_gone {
                break;
            }
            match commands.blocking_recv() {
                Some(command) => {
                    if handle_command(&mut scheduler, command).is_break() {
                        break;
                    }
                }
                None => break,
            }
        }
        loop {
            match commands.try_recv() {
                Ok(command) => {
                    if handle_command(&mut scheduler, command).is_break() {
                        stats.send_replace(scheduler.stats());
                        return;
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    handles_gone = true;
                    break;
                }
            }
        }
        if scheduler.has_work() {
            let report = scheduler.step();
            stats.send_replace(scheduler.stats());
            if report.is_idle() && !handles_gone {
                // Nothing could be scheduled (cannot happen with a consistent config, since a
                // lone sequence always fits): wait for a command instead of spinning.
                match commands.blocking_recv() {
                    Some(command) => {
                        if handle_command(&mut scheduler, command).is_break() {
                            break;
                        }
                    }
                    None => handles_gone = true,
                }
            }
            continue;
        }
        stats.send_replace(scheduler.stats());
    }
    stats.send_replace(scheduler.stats());
}

fn handle_command(scheduler: &mut Scheduler, command: Command) -> std::ops::ControlFlow<()> {
    match command {
        Command::Submit {
            request,
            events,
            reply,
        } => {
            let _ = reply.send(scheduler.submit(request, events));
        }
        Command::Cancel(id) => scheduler.cancel(id),
        Command::Abort => {
            scheduler.abort_all(&EngineError::ShuttingDown);
            return std::ops::ControlFlow::Break(());
        }
    }
    std::ops::ControlFlow::Continue(())
}

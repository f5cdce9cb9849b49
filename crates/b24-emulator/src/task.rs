//! Tasks for users that template steps create ("Approve document"), completed through the
//! control API or automatically after a delay.

use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::clock;
use crate::template::TaskOutcome;

/// Whether a task still waits for its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskStatus {
    Open,
    Completed,
}

/// Who completed a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompletedBy {
    /// [`crate::Emulator::complete_task`] or its control route.
    User,
    /// The step's `auto_complete_after` passed.
    Timer,
}

/// A task as tests inspect it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    /// Portal-wide, from 1.
    pub task_id: u64,
    pub workflow_id: String,
    /// The task step's name (`{=name:outcome}`).
    pub step: String,
    pub user_id: u64,
    pub title: String,
    pub description: String,
    pub status: TaskStatus,
    pub outcome: Option<TaskOutcome>,
    pub comment: String,
    pub completed_by: Option<CompletedBy>,
    #[serde(with = "clock::unix")]
    pub created_at: SystemTime,
    #[serde(with = "clock::opt_unix")]
    pub completed_at: Option<SystemTime>,
}

/// What completing a task takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskCompletion {
    pub outcome: TaskOutcome,
    #[serde(default)]
    pub comment: String,
}

/// The workflow's record of one task.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub(crate) state: TaskState,
    /// When the timer completes it, if the step set one.
    pub(crate) auto_due: Option<Instant>,
    /// The monotonic moment of completion (the engine continues from it).
    pub(crate) completed: Option<Instant>,
}

impl Task {
    pub(crate) fn is_open(&self) -> bool {
        self.state.status == TaskStatus::Open
    }

    pub(crate) fn complete(
        &mut self,
        outcome: TaskOutcome,
        comment: String,
        by: CompletedBy,
        at: Instant,
        at_wall: SystemTime,
    ) {
        self.state.status = TaskStatus::Completed;
        self.state.outcome = Some(outcome);
        self.state.comment = comment;
        self.state.completed_by = Some(by);
        self.state.completed_at = Some(at_wall);
        self.completed = Some(at);
    }
}

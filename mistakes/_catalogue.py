"""The built-in catalogue: every mistake a rule links to, so links resolve on a fresh install.

A user's MISTAKES.md import replaces these texts id by id (the user's words win); the
catalogue only fills ids that are missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "BUILTIN_CHECKLIST",
    "BUILTIN_MISTAKES",
    "CONDUCT_IDS",
    "MODEL_CHECKS",
    "NONFINITE_ID",
    "RULE_LINKS",
    "BuiltinItem",
    "BuiltinMistake",
]

NONFINITE_ID = "M-045"


@dataclass(frozen=True)
class BuiltinMistake:
    id: str
    title: str
    section: str
    when: str
    symptom: str
    root_cause: str
    fix: str
    prevention: str


@dataclass(frozen=True)
class BuiltinItem:
    title: str
    text: str
    mistake_ids: tuple[str, ...]
    rule: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


#: Which mistakes each supervisor rule guards against (DESIGN section 5).
RULE_LINKS: dict[str, tuple[str, ...]] = {
    "stale_processes": ("M-025",),
    "ram_headroom": ("M-030",),
    "utilisation": ("M-015", "M-035"),
    # a GPU job whose utilisation cannot be read would run unjudged: M-015 unwatched
    "gpu_probe": ("M-015",),
    "gpu_memory": (),  # a warning only; no mistake of the catalogue is about GPU memory
    "nonfinite": (NONFINITE_ID,),
    "stall": ("M-037",),
    # the scheduler posts heartbeats on its own: no listener to rearm after a compaction
    # (M-027), no background polling loops (M-028), no promise to remember (M-037)
    "heartbeat": ("M-037", "M-027", "M-028"),
    "gradient_flow": ("M-032",),
    "input_coverage": ("M-008",),
    "gates": ("M-014",),
    # the ends a scheduler decides: its time limit and its memory limit are mistakes of their own
    "scheduler_timeout": ("M-046",),
    "scheduler_oom": ("M-047",),
    "scheduler_node": (),
    "scheduler_preempted": (),
    "scheduler_cancelled": (),
    # the run dir must be on a filesystem the job's nodes see
    "shared_fs": ("M-048",),
    # the symptoms of the diagnosis of training dynamics (harness.core.detectors)
    "loss_spike": ("M-049",),
    "divergence": ("M-049",),
    "no_progress": ("M-029",),
    "grad_explosion": ("M-001", "M-049"),
    "vanishing_gradient": ("M-032",),
    "metric_collapse": ("M-039", "M-018"),
    "overfitting": ("M-007", "M-019"),
    "degenerate_metric": ("M-031", "M-007"),
    "throughput_drop": (),  # no mistake of the catalogue is about a slowing job
    # a job's own alert (Reporter.alert) names no mistake unless it names a check
    "job_alert": (),
    # the model checks (harness.job.checks: called by the user, or run by the framework
    # callbacks at fit start; their FAIL lines become incidents under these names)
    "vocab_size": ("M-026",),
    "truncation": ("M-008",),
    "loss_weighting": ("M-002",),
    "gradient_check": ("M-001", "M-009"),
    "padding_side": ("M-003",),
    "data_passes": ("M-011",),
}

#: the rules that are model checks: run before training (a preflight command, or the
#: framework callbacks at fit start) rather than by the supervisor while a job runs
MODEL_CHECKS = frozenset(
    {
        "gradient_flow",
        "input_coverage",
        "vocab_size",
        "truncation",
        "loss_weighting",
        "gradient_check",
        "padding_side",
        "data_passes",
    }
)

#: mistakes only a person or an agent can prevent, by how they work (which repo they
#: edit, what they read after losing their context, whether they guess numbers): no
#: machine check exists for them, so the brief lists their checklist items instead
CONDUCT_IDS = frozenset(
    {
        "M-004",  # a model component added after training: a design decision
        "M-005",  # non-ASCII characters in PTX strings: a build of the user's own kernels
        "M-006",  # delimiter-based parsing of a structured language
        "M-010",  # blind experiments before a diagnostic
        "M-012",  # edited the wrong copy of the repository
        "M-013",  # skipped the recon after a context compaction
        "M-016",  # no clean build after GPU backward changes
        "M-017",  # meta tools executed inside a training loop
        "M-024",  # answered vision questions from memory
        "M-036",  # presented guesses as measurements
    }
)

BUILTIN_MISTAKES: tuple[BuiltinMistake, ...] = (
    BuiltinMistake(
        id="M-008",
        title="Inputs silently truncated to the model's context",
        section="Category: Data",
        when="Preparing sequences for a model with a fixed context length.",
        symptom=(
            "Accuracy plateaus below what the task allows; the positions that need the "
            "longest context are never learned, and nothing in the logs says why."
        ),
        root_cause=(
            "The sequence length was shorter than the dependency the task contains, and "
            "the data pipeline cut the excess without a warning."
        ),
        fix="Raise the sequence length to cover the task's longest dependency, or change the task.",
        prevention=(
            "Every task declares the context it needs; the preflight refuses a run whose "
            "seq_len is shorter, naming both numbers."
        ),
    ),
    BuiltinMistake(
        id="M-014",
        title="A metric reported as informational never gated the result",
        section="Category: Evaluation",
        when="Declaring a run successful at the end of training.",
        symptom=(
            "A run was reported ok while one of its metrics stood at 0/21, because that "
            "metric was only printed, not checked."
        ),
        root_cause="Only some metrics were compared with a threshold; the rest were decoration.",
        fix="Treat every declared metric as a gate; a missing metric fails its gate.",
        prevention=(
            "Runs declare gates in their spec; the verdict is succeeded only when every gate "
            "passes, and the failing ones are recorded as incidents."
        ),
    ),
    BuiltinMistake(
        id="M-015",
        title="GPU underutilised because part of the step ran on the CPU",
        section="Category: Devices",
        when="Any GPU training run, most often after a change to data loading or the loss.",
        symptom=(
            "The job runs for hours at a few percent GPU utilisation; steps per second are a "
            "fraction of what the hardware should give."
        ),
        root_cause=(
            "A tensor op, the batch construction or a metric ran on the CPU each step, and the "
            "GPU waited on it."
        ),
        fix="Keep data resident on the device, vectorise batch construction, avoid host syncs.",
        prevention=(
            "The supervisor samples device utilisation over a window after a grace period and "
            "aborts a run that stays below the threshold during its train phase."
        ),
    ),
    BuiltinMistake(
        id="M-025",
        title="Stale listener and heartbeat processes piled up after restarts",
        section="Category: Process hygiene",
        when="Restarting an agent session, a bot or a training script repeatedly.",
        symptom=(
            "Dozens of old listeners and heartbeat loops run at once, answer twice, hold GPU "
            "memory and ports, and slow the machine."
        ),
        root_cause="Each restart started new processes without stopping the previous ones.",
        fix="Track every process the harness starts (pid, create time, run marker) and stop them.",
        prevention=(
            "Before each launch, processes the harness started for runs that are over are "
            "terminated; processes it did not start are never touched."
        ),
    ),
    BuiltinMistake(
        id="M-030",
        title="RAM exhaustion killed the training run (or the whole VM)",
        section="Category: Memory",
        when="Loading large datasets, caching batches in RAM, or running two jobs at once.",
        symptom=(
            "The kernel's OOM killer ends the job without a traceback, sometimes taking the SSH "
            "session or the VM with it; work since the last checkpoint is lost."
        ),
        root_cause=(
            "Nobody checked free memory before launch or while running, and container limits "
            "were lower than the host figures suggested."
        ),
        fix="Stream data, shrink caches, and stop gracefully with a checkpoint before the OOM.",
        prevention=(
            "Launch is refused below the configured free RAM (cgroup-aware); while running, a "
            "drop below it stops the run with SIGINT first so it can checkpoint."
        ),
    ),
    BuiltinMistake(
        id="M-032",
        title="A component received zero gradient; only the last layer learned",
        section="Category: Model",
        when="Adding a module, freezing parts of a model, or detaching a tensor by mistake.",
        symptom=(
            "Training loss falls a little and stops; the parameters of one component never "
            "change from their initial values."
        ),
        root_cause=(
            "A detach, a frozen parameter or an unused branch cut the component out of the "
            "backward graph."
        ),
        fix="Reconnect the component; remove stray detach() calls and requires_grad=False.",
        prevention=(
            "The preflight runs one backward pass on a dummy loss and fails, naming the "
            "parameters, when any trainable parameter gets no or zero gradient."
        ),
    ),
    BuiltinMistake(
        id="M-035",
        title="Compute ran on the wrong device at low total utilisation",
        section="Category: Devices",
        when="Running on a machine where the device choice is implicit (auto, env variables).",
        symptom=(
            "The job is slow and the machine is mostly idle: a CPU job using one core of many, "
            "or a job meant for the GPU running on the CPU."
        ),
        root_cause="The device or thread count defaulted to something other than intended.",
        fix="Choose the device explicitly, set thread counts, and report the device at start.",
        prevention=(
            "CPU jobs are held to the same utilisation rule as GPU jobs, measured as the "
            "job's share of the whole machine."
        ),
    ),
    BuiltinMistake(
        id="M-037",
        title="A heartbeat that relied on someone remembering to send it",
        section="Category: Process hygiene",
        when="Long runs watched from a phone, often driven by a coding agent.",
        symptom=(
            "The status updates stopped when the agent's context filled up or the person went "
            "to sleep; a hung job went unnoticed for hours."
        ),
        root_cause="The heartbeat was a promise in a prompt, not a scheduled job.",
        fix="Send heartbeats from a scheduler in a long-lived process, independent of any agent.",
        prevention=(
            "The harness posts a heartbeat on a fixed schedule whatever the job does, and "
            "aborts a job that writes no metrics for longer than its stall limit."
        ),
    ),
    BuiltinMistake(
        id=NONFINITE_ID,
        title="Loss went NaN and nobody noticed until morning",
        section="Stability journal",
        when="Raising the learning rate, switching to reduced precision, or new data.",
        symptom=(
            "Loss or gradient norm becomes NaN or Inf at some step; the job keeps running and "
            "burns hours producing nothing."
        ),
        root_cause=(
            "An overflow or a division by zero produced a non-finite value, and no one was "
            "checking for it."
        ),
        fix="Lower the learning rate, clip gradients, check the data for bad values.",
        prevention="The supervisor aborts a run the moment a non-finite loss or grad norm appears.",
    ),
    BuiltinMistake(
        id="M-046",
        title="A cluster job killed at its time limit, hours of work lost",
        section="Cluster jobs",
        when="A long run on Slurm whose time limit was a guess, or the partition's default.",
        symptom=(
            "The job ends TIMEOUT; the last checkpoint is far behind, or there is none, and "
            "the run has to start again from the queue."
        ),
        root_cause=(
            "The time limit was shorter than the run, and nothing checkpointed on the "
            "warning signal or often enough."
        ),
        fix=(
            "Set the time limit from a measured rate (steps/s times steps, with margin), "
            "checkpoint regularly, and resume from the last checkpoint."
        ),
        prevention=(
            "The harness records TIMEOUT as its own incident with the limit, so the next "
            "spec asks for enough time, and an abort always signals INT first so the job "
            "can checkpoint."
        ),
    ),
    BuiltinMistake(
        id="M-047",
        title="A cluster job killed for exceeding its memory request",
        section="Cluster jobs",
        when="A Slurm job with --mem set below what the data loader and model need.",
        symptom="The job ends OUT_OF_MEMORY (the cgroup OOM killer), often well into training.",
        root_cause=(
            "The memory request was sized for the model, not for the workers, caches and "
            "peak allocations around evaluation or checkpointing."
        ),
        fix="Measure the job's peak RSS on a short run and request it with margin.",
        prevention=(
            "The harness records OUT_OF_MEMORY as its own incident; the node agent's samples "
            "show RAM headroom while the job runs, under the same RAM rule as local jobs."
        ),
    ),
    BuiltinMistake(
        id="M-048",
        title="A run directory the compute nodes could not see",
        section="Cluster jobs",
        when="Submitting from a login node whose local disk holds the run directory.",
        symptom=(
            "The job fails at once, or runs with no metrics and no probes reaching the "
            "supervisor, which then judges a job it cannot see."
        ),
        root_cause="The run directory was on a filesystem the nodes do not share.",
        fix="Put the state directory (and its runs) on the shared filesystem.",
        prevention=(
            "The job's first act is to prove the run directory is visible from its node; "
            "if not, it stops with one line saying so and the run fails naming it."
        ),
    ),
    BuiltinMistake(
        id="M-001",
        title="Hand-rolled gradient explosion",
        section="Category: Training",
        when="A hand-written backward pass.",
        symptom="The model never learns; gradients are orders of magnitude off.",
        root_cause="The manual backward pass had a 1,000,000x gradient magnitude error.",
        fix="Use the framework's autograd; check gradients numerically.",
        prevention="Run a gradient check on every architecture change; watch grad_norm.",
    ),
    BuiltinMistake(
        id="M-002",
        title="One token class dominated the gradient",
        section="Category: Training",
        when="A loss averaged over positions where one class of targets is frequent.",
        symptom="The model learns the frequent token perfectly; the rest stay near chance.",
        root_cause="Equal weighting per position let the dominant class own the gradient signal.",
        fix="Weight the loss per position or class, on purpose and declared.",
        prevention=(
            "Check per-position gradient contribution before training (the loss_weighting "
            "check); weighting that was not declared fails it."
        ),
    ),
    BuiltinMistake(
        id="M-003",
        title="Decoder trained on left-padded sequences",
        section="Category: Data",
        when="Batching variable-length sequences for a decoder with rotary positions.",
        symptom="The decoder emits EOS at once or garbage at inference.",
        root_cause="Training put BOS at position N (left padding); inference starts at 0.",
        fix="Right-pad decoder sequences; left-pad encoder sequences.",
        prevention="The padding_side check counts the rows of a batch padded on the wrong side.",
    ),
    BuiltinMistake(
        id="M-009",
        title="A forward-pass utility corrupted the backward pass",
        section="Category: Training",
        when="Reusing a forward kernel (a mask fill) on gradient tensors.",
        symptom="Gradients exploded a million-fold for every backbone parameter.",
        root_cause="The mask kernel wrote its forward fill value (-1e9) into gradients.",
        fix="Give the kernel its fill value as a parameter; 0 in the backward pass.",
        prevention=(
            "Compare analytic gradients with finite differences on a slice (the "
            "gradient_check check) after any change to a backward path."
        ),
    ),
    BuiltinMistake(
        id="M-011",
        title="Training steps not scaled with the data",
        section="Category: Training",
        when="A fixed step count while the dataset grew.",
        symptom="A third of the unique samples were never seen; eval accuracy stalled.",
        root_cause="Each sample was seen 0.65 times on average: steps stayed constant.",
        fix="Scale steps with data: at least three passes over every unique sample.",
        prevention=(
            "The data_passes check compares samples seen (steps x batch) with the unique "
            "samples times the passes required."
        ),
    ),
    BuiltinMistake(
        id="M-026",
        title="Token ids beyond the embedding table",
        section="Category: Data",
        when="Encoding input with a tokenizer other than the one the model was built for.",
        symptom="index-select invalid index 256 with dim size 256; tests crash.",
        root_cause="A tokenizer of 259 ids fed a model whose embedding has 256 rows.",
        fix="Encode with the model's own vocabulary; match sizes.",
        prevention=(
            "The vocab_size check compares the tokenizer's size and the batch's largest "
            "id with the embedding rows and the output size, naming the modules."
        ),
    ),
    BuiltinMistake(
        id="M-027",
        title="Messages missed after a context compaction",
        section="Category: Process hygiene",
        when="An agent resuming after its context was compacted.",
        symptom="Messages from the person were never seen; they had to ask twice.",
        root_cause="The listener had to be rearmed by hand, and the agent skipped it.",
        fix="Nothing to rearm: the daemon keeps the heartbeat and the inbox on its own.",
        prevention=(
            "The scheduler posts heartbeats whoever is watching; Discord notes wait in the "
            "inbox and the brief shows them first."
        ),
    ),
    BuiltinMistake(
        id="M-028",
        title="Background polling loops bricked the session",
        section="Category: Process hygiene",
        when="Several background listener and timer tasks in one agent session.",
        symptom="Every action failed; the session had to be killed.",
        root_cause="Four concurrent background tasks returned into a stale conversation.",
        fix="One timer-based heartbeat instead of polling listeners.",
        prevention="The daemon's scheduler is the only heartbeat; no session runs a loop.",
    ),
    BuiltinMistake(
        id="M-007",
        title="Loss collapse by memorisation",
        section="Category: Training",
        when="A small dataset sampled uniformly.",
        symptom="Loss drops to almost nothing; the model outputs one response for every prompt.",
        root_cause="Memorisation, not learning: the sampling overfit to one response pattern.",
        fix="Sample by weight (e.g. by length); more data.",
        prevention=(
            "Ultra-low loss on small datasets = memorisation. Monitor per-prompt diversity, "
            "not just aggregate loss."
        ),
    ),
    BuiltinMistake(
        id="M-018",
        title="A format change silently dropped the bench score",
        section="Category: Data",
        when="Changing the format of the training targets (a prefix added).",
        symptom="The evaluation score fell (21 to 15) after the change.",
        root_cause="The change altered what the model was trained and judged on.",
        fix="Compare like with like; re-run the gate after any target format change.",
        prevention="Any change to the data or its format re-runs the evaluation at once.",
    ),
    BuiltinMistake(
        id="M-019",
        title="New data caused a regression on old behaviour",
        section="Category: Data",
        when="Adding new intents to a small fixed dataset.",
        symptom="Existing cases that used to pass started failing.",
        root_cause="A small fixed dataset plus new data distorted the decision boundary.",
        fix="Add deterministic examples for every must-pass case.",
        prevention="After any data change, re-run the evaluation immediately.",
    ),
    BuiltinMistake(
        id="M-029",
        title="Loss plateaued: the model found a shortcut",
        section="Category: Training",
        when="An encoder-decoder trained with too little noise.",
        symptom=(
            "Loss plateaued at the same value whatever the batch size or lr; the output was "
            "gibberish."
        ),
        root_cause="The decoder ignored its conditioning and learned local statistics only.",
        fix="Force the dependency (more denoising); add diagnostics after training.",
        prevention="A loss that will not move across settings is structural: instrument it.",
    ),
    BuiltinMistake(
        id="M-031",
        title="A metric identical across every variant, ignored",
        section="Category: Process",
        when="Twelve training variants tried blind.",
        symptom="A metric stuck at exactly the same value (0.9591) across all runs.",
        root_cause=(
            "The constancy was the diagnostic signal: the problem was upstream of training, "
            "and no one instrumented the data flow."
        ),
        fix="Stop iterating; trace the data through every stage and measure each.",
        prevention="A metric exactly constant where it should vary means: instrument, now.",
    ),
    BuiltinMistake(
        id="M-039",
        title="A training phase destroyed a capability the loss did not show",
        section="Category: Training",
        when="A second phase (a different objective or data) after a good first phase.",
        symptom="The evaluation quality collapsed after the phase while its own loss improved.",
        root_cause="Catastrophic forgetting from a mismatched objective or data mix.",
        fix="Keep the checkpoint from before the phase; lower lr; mix in the old data.",
        prevention="After any phase or data change, run the full evaluation before going on.",
    ),
    BuiltinMistake(
        id="M-049",
        title="An lr too high made training unstable (accuracy 93 % to 63 %)",
        section="Stability journal",
        when="Training the echo task at lr 5e-4.",
        symptom="Instability around step 600: accuracy crashed from 93 % to 63 %.",
        root_cause="The learning rate was too high for the later phase of training.",
        fix="Resume from the checkpoint before the crash with a lower lr (1e-4).",
        prevention=(
            "The harness names a spike, divergence or gradient explosion when it starts, "
            "with the lr change before it, and can roll back to the last checkpoint."
        ),
    ),
)

BUILTIN_CHECKLIST: tuple[BuiltinItem, ...] = (
    BuiltinItem(
        "No stale processes",
        "Processes from earlier runs are terminated before a launch.",
        ("M-025",),
        "stale_processes",
    ),
    BuiltinItem(
        "RAM headroom",
        "Enough free RAM before launch and while running.",
        ("M-030",),
        "ram_headroom",
    ),
    BuiltinItem(
        "Device utilisation",
        "The job keeps its device busy during training.",
        ("M-015", "M-035"),
        "utilisation",
    ),
    BuiltinItem(
        "Finite loss",
        "Loss and gradient norm stay finite.",
        (NONFINITE_ID,),
        "nonfinite",
    ),
    BuiltinItem(
        "Metrics keep flowing",
        "The job writes metrics at least once per stall window.",
        ("M-037",),
        "stall",
    ),
    BuiltinItem(
        "Automatic heartbeat",
        "A scheduler posts the heartbeat, not a person or an agent.",
        ("M-037",),
        "heartbeat",
    ),
    BuiltinItem(
        "Gradient reaches every parameter",
        "A preflight backward pass gives every trainable parameter a non-zero gradient.",
        ("M-032",),
        "gradient_flow",
    ),
    BuiltinItem(
        "Context covers the task",
        "The sequence length covers the task's longest dependency.",
        ("M-008",),
        "input_coverage",
    ),
    BuiltinItem(
        "Every metric gates",
        "Every declared metric is checked against its gate at the end.",
        ("M-014",),
        "gates",
    ),
)

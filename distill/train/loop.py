"""The training stage: examples in, a student that loads with plain transformers out.

`train_student` reads top to bottom: claim the output folder, split, tokenizer, model, batches,
optimizer, resume from the newest checkpoint, `_train` (forward, loss, backward, clip, step, log,
evaluate, checkpoint), release the final model. The same code runs on a CPU, one GPU, or several
GPUs and nodes under `accelerate launch`: Accelerate places the model and wraps it for data-parallel
(DDP) or sharded (FSDP, `distill.train.sharding`) training, and every process reads its own slice of
each global batch.

Everything lands in `out_dir` (RUN/train): `run.json` (what is being trained), `split.json`,
`tokenizer/`, `checkpoints/`, `metrics.jsonl`, `loss_curve.png`, and at the end `model/` (plus
`adapter/` for LoRA) and `result.json`. Calling again after a crash resumes from the newest checkpoint;
calling again after success with the same inputs returns the stored result.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel
from accelerate.utils import broadcast, broadcast_object_list, set_seed
from transformers import LlamaForCausalLM

from distill.errors import ConfigError, Problem, RunDirError
from distill.train.bpb import bits_per_byte
from distill.files import fingerprint as stable_fingerprint, read_json_file, write_json_atomic
from distill.lineage import examples_digest, weights_digest
from distill.threads import ThreadTuner
from distill.train.checkpoint import TrainState, checkpoints, load_checkpoint, save_checkpoint, save_release_model
from distill.train.config import TrainConfig, TrainResult
from distill.train.chat_template import CHAT_TEMPLATE, assistant_bits_per_byte
from distill.train.data import IGNORE, Kind, TrainBatches, load_or_make_split, render_prompt
from distill.train.distill_loss import Distiller, teacher_documents
from distill.train.flops import flops_per_token, measure_matmul_flops
from distill.train.lora import load_base_model
from distill.train.metrics import MetricsLog, plot_loss_curve, progress_bar
from distill.train.muon import BatchedMuon
from distill.train.presets import count_parameters, model_config
from distill.train.sharding import check_checkpoint_layout, is_sharded, make_accelerator, whole_model
from distill.train.tokenizer import load_or_train_tokenizer


def train_student(examples: list[dict], out_dir: Path, config: TrainConfig, *, kind: Kind,
                  replace_other: bool = False) -> TrainResult:
    """Train (or fine-tune) the student on `examples` ({"prompt", "text"}, optional "id") into `out_dir`.
    A folder that holds a training with other inputs is refused, or with `replace_other` cleared first."""
    out_dir = Path(out_dir)
    config = _with_chat_template(config, kind)
    inputs_fingerprint = _check_inputs(examples, config, kind)
    if (done := _finished(out_dir, inputs_fingerprint)) is not None:
        return done

    accelerator = _accelerator(config, out_dir)
    with accelerator.main_process_first():  # the main process writes run.json, the split and the tokenizer
        _claim(out_dir, inputs_fingerprint, config, kind, replace_other)
        split = load_or_make_split(out_dir / "split.json", examples, val_fraction=config.val_fraction,
                                   mode=config.val_split, seed=config.seed)
        train_examples = [examples[i] for i in split.train]
        set_seed(config.seed)  # same initial weights on every process and every attempt
        model, tokenizer = prepare_student(config, out_dir, train_texts=[e["text"] for e in train_examples])

    documents, distiller = teacher_documents(tokenizer, train_examples, kind, config, out_dir)  # None: text only
    batches = TrainBatches(documents, kind=kind,
                           context_length=config.context_length, batch_size=config.batch_size, seed=config.seed,
                           rank=accelerator.process_index, world_size=accelerator.num_processes,
                           pad_id=tokenizer.pad_token_id)
    batches = distiller.follow(batches) if distiller is not None else batches
    val_examples = [examples[i] for i in split.val]
    val_texts = [e["text"] for e in val_examples]
    val_prompts = [render_prompt(tokenizer, e["prompt"]) for e in val_examples] if kind == "instruct" else None

    model, optimizers, average, state = _prepare_to_train(accelerator, model, config, out_dir)
    log = _metrics_log(accelerator, config, out_dir, state)

    def released():
        """The weights validation scores and the release saves: the average's, if one is kept."""
        return average.module if average is not None else accelerator.unwrap_model(model)

    def evaluate(limit: int | None) -> dict:
        """Validation loss and bits per byte on the first `limit` validation texts (all with None).

        The main process scores and tells the others, so all take the same early-stopping decision. A
        sharded model is run by every process (each gathers the blocks in turn); they score alike."""
        scores = [None]
        if accelerator.is_main_process or is_sharded(accelerator):
            with torch.no_grad():  # in fp32, so the figure matches `distill eval` of the saved model
                scored = assistant_bits_per_byte(released(), tokenizer, val_texts[:limit], context_length=config.context_length,
                                                 batch_size=config.batch_size) if kind == "chat" else \
                    bits_per_byte(released(), tokenizer, val_texts[:limit], prompts=val_prompts[:limit] if val_prompts else None,
                                  context_length=config.context_length, batch_size=config.batch_size)
            scores[0] = {"val_loss": scored["nats_per_token"], "val_bpb": scored["bits_per_byte"]}
        broadcast_object_list(scores)
        model.train()
        return scores[0]

    final_eval = _train(accelerator, model, optimizers, batches, evaluate, state, config, out_dir, log, average=average,
                        distiller=distiller)
    result = _save_result(accelerator, model, average, tokenizer, out_dir, state, final_eval,
                          examples_digest(examples), inputs_fingerprint)
    accelerator.wait_for_everyone()
    accelerator.end_training()  # last: with several processes it also ends their process group
    return result or _finished(out_dir, inputs_fingerprint)


def _with_chat_template(config: TrainConfig, kind: str) -> TrainConfig:
    """Conversations need the template that writes tool turns, unless the spec names its own."""
    if kind == "chat" and config.chat_template is None:
        return config.model_copy(update={"chat_template": CHAT_TEMPLATE})
    return config


def _accelerator(config: TrainConfig, out_dir: Path):
    """One process, DDP or FSDP (distill.train.sharding), checked against the settings it cannot serve."""
    accelerator = make_accelerator(config, out_dir)
    if config.ema_decay is not None and is_sharded(accelerator):  # the average would be a whole copy per process
        raise ConfigError(Problem("a weight average is not kept under FSDP sharding", key="training.ema_decay",
                                  hint="drop training.ema_decay, or train with sharding: ddp"))
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    return accelerator


def _prepare_to_train(accelerator, model, config: TrainConfig, out_dir: Path):
    """(model, optimizers, weight average or None, state): placed for the accelerator, resumed from the
    newest checkpoint when there is one."""
    optimizers = make_optimizers(model, config, fused=accelerator.device.type in ("cpu", "cuda"))
    average = make_weight_average(model, config.ema_decay)
    model, *optimizers = accelerator.prepare(model, *optimizers)
    if average is not None:  # saved and restored with every checkpoint, on every process
        average.to(accelerator.device)
        accelerator.register_for_checkpointing(average)
    if checkpoints(out_dir):
        check_checkpoint_layout(accelerator, checkpoints(out_dir)[-1])
    state = load_checkpoint(accelerator, checkpoints(out_dir)[-1]) if checkpoints(out_dir) else TrainState()
    return model, optimizers, average, state


def _metrics_log(accelerator, config: TrainConfig, out_dir: Path, state: TrainState):
    """The function each metrics row goes to: metrics.jsonl, and TensorBoard / W&B when asked for."""
    metrics = MetricsLog(out_dir / "metrics.jsonl", after_step=state.step, enabled=accelerator.is_main_process)
    if config.report_to:
        accelerator.init_trackers("distill-train", config=config.model_dump(mode="json"))

    def log(row: dict) -> None:
        metrics.write(row)
        accelerator.log(row, step=row["step"])

    return log


def _save_result(accelerator, model, average: AveragedModel | None, tokenizer, out_dir: Path, state: TrainState,
                 final_eval: dict, dataset_fingerprint: str, inputs_fingerprint: str) -> TrainResult | None:
    """The released model (the average's weights, if one is kept), the loss curve and result.json, written by
    the main process (None elsewhere); every process takes part in gathering a sharded model."""
    unwrapped = whole_model(accelerator, model)
    if not accelerator.is_main_process:
        return None
    if average is not None:
        unwrapped = average.module
    non_embedding, trainable, _ = count_parameters(unwrapped)
    save_release_model(unwrapped, tokenizer, out_dir / "model", adapter_dir=out_dir / "adapter")
    plot_loss_curve(MetricsLog.read(out_dir / "metrics.jsonl"), out_dir / "loss_curve.png")
    result = TrainResult(
        model_dir=out_dir / "model", steps=state.step, tokens=state.tokens, seconds=state.seconds,
        stopped_by=state.stopped_by, val_loss=final_eval["val_loss"], val_bpb=final_eval["val_bpb"],
        non_embedding_params=non_embedding, trainable_params=trainable,
        metrics_path=out_dir / "metrics.jsonl", loss_curve_path=out_dir / "loss_curve.png",
        dataset_fingerprint=dataset_fingerprint, weights_sha256=weights_digest(out_dir / "model") or "",
    )
    write_json_atomic(out_dir / "result.json", {"fingerprint": inputs_fingerprint, **asdict(result)})
    return result


def _train(accelerator, model, optimizers: list, batches: TrainBatches, evaluate, state: TrainState, config: TrainConfig,
           out_dir: Path, log, *, average: AveragedModel | None = None, distiller: Distiller | None = None) -> dict:
    """Run optimizer steps until the budget is spent; checkpoint and evaluate on the way and at the end.

    Mutates `state` (and `average`, the weight average, after every step); returns the final evaluation.
    """
    vocab_size = accelerator.unwrap_model(model).config.vocab_size
    fpt = flops_per_token(accelerator.unwrap_model(model), config.context_length)
    precision = torch.bfloat16 if _trains_in_bf16(config) else torch.float32
    peak = config.peak_flops or measure_matmul_flops(accelerator.device, precision, seconds=0.5)
    loss_of = torch.compile(next_token_loss) if config.compile else next_token_loss
    loss_of = distiller.loss if distiller is not None else loss_of  # CE plus KL to the teacher (distill_loss)
    tuner = _thread_tuner(accelerator, config)
    model.train()
    clock = time.perf_counter() - state.seconds  # the run's clock continues across resumes
    window = (state.tokens, time.perf_counter())  # tokens/s over the steps since the last log line
    last_eval: dict | None = None
    plotted = time.perf_counter()  # the loss curve is redrawn at checkpoints a minute apart, and at the end
    step_seconds = last_step = 0.0  # how far ahead a budget in minutes looks (see learning_rate), in seconds

    with progress_bar(accelerator.is_main_process) as bar:
        task = bar.add_task("train", total=1.0, completed=_progress(state, config), stats="")
        while (stop := state.stopped_by or _out_of_budget(state, config, ahead=step_seconds)) is None:
            step_started = time.perf_counter()
            lr = learning_rate(state, config, ahead=step_seconds)
            _set_learning_rate(optimizers, lr)
            loss_sum, step_tokens = _accumulate(accelerator, model, batches, state, config, loss_of, precision, vocab_size)
            grad_norm = _optimizer_step(accelerator, model, optimizers, config, average)
            state.step += 1
            state.tokens += int(accelerator.reduce(step_tokens, "sum"))
            # Every process must stop at the same step: the main process's clock decides.
            state.seconds = float(broadcast(torch.tensor(time.perf_counter() - clock, device=accelerator.device)))
            # On a busy machine step times jitter: the slower of the last two steps guards the budget's end.
            took = state.seconds - (step_started - clock)
            step_seconds, last_step = max(last_step, took), took

            if state.step % config.log_every == 0:
                tokens_per_s = (state.tokens - window[0]) / (time.perf_counter() - window[1])
                window = (state.tokens, time.perf_counter())
                row = {"step": state.step, "tokens": state.tokens, "seconds": round(state.seconds, 3),
                       "loss": accelerator.reduce(loss_sum, "mean").item() / config.grad_accum, "lr": lr,
                       "grad_norm": float(grad_norm), "tokens_per_s": round(tokens_per_s, 1),
                       "mfu": round(fpt * tokens_per_s / (peak * accelerator.num_processes), 4),
                       "threads": torch.get_num_threads(), **(distiller.metrics() if distiller is not None else {})}
                log(row)
                if tuner is not None and (threads := tuner.observe(tokens_per_s)) is not None:
                    torch.set_num_threads(threads)
                bar.update(task, completed=_progress(state, config), stats=(
                    f"step {state.step} loss {row['loss']:.3f} {tokens_per_s / 1e3:.1f}k tok/s MFU {row['mfu']:.2f}"))
            if state.step % config.eval_every == 0:
                last_eval = _evaluate_and_log(evaluate, config.eval_max_texts, state, log)
                state.stopped_by = _early_stop(last_eval, state, config)
                window = (state.tokens, time.perf_counter())  # eval time is not training throughput
            if state.step % config.checkpoint_every == 0:
                plotted = _checkpoint(accelerator, model, out_dir, state, config, plotted)
                window = (state.tokens, time.perf_counter())
        bar.update(task, completed=1.0)

    state.stopped_by = stop
    return _final_evaluation(accelerator, model, evaluate, last_eval, state, config, out_dir, log)


def _set_learning_rate(optimizers: list, lr: float) -> None:
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = lr


def _checkpoint(accelerator, model, out_dir: Path, state: TrainState, config: TrainConfig, plotted: float) -> float:
    """Save a checkpoint; redraw the loss curve when the last drawing is a minute old. Returns when it was drawn."""
    save_checkpoint(accelerator, model, out_dir, state, keep=config.keep_checkpoints)
    if accelerator.is_main_process and time.perf_counter() - plotted > 60:  # plotting takes ~0.3 s
        plot_loss_curve(MetricsLog.read(out_dir / "metrics.jsonl"), out_dir / "loss_curve.png")
        return time.perf_counter()
    return plotted


def _thread_tuner(accelerator, config: TrainConfig) -> ThreadTuner | None:
    """On a CPU shared with other processes fewer threads can train faster; the tuner tries them. Not with a
    count the user pinned (bit-for-bit resumes), compiled kernels (their thread count is fixed when
    compiled) or several processes (each would decide alone)."""
    if accelerator.device.type == "cpu" and not config.num_threads and not config.compile and accelerator.num_processes == 1:
        return ThreadTuner(torch.get_num_threads())
    return None


def _accumulate(accelerator, model, batches: TrainBatches, state: TrainState, config: TrainConfig, loss_of,
                precision: torch.dtype, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward over one step's micro-batches (advancing `state`'s place in the data); returns
    the summed loss and the number of tokens trained on, both on the device."""
    loss_sum = torch.zeros((), device=accelerator.device)
    step_tokens = torch.zeros((), dtype=torch.long, device=accelerator.device)
    for micro in range(config.grad_accum):
        inputs, targets = batches.get(state.epoch, state.batch)
        state.epoch, state.batch = divmod(state.epoch * batches.per_epoch + state.batch + 1, batches.per_epoch)
        step_tokens += int((targets != IGNORE).sum()) if batches.kind != "text" else targets.numel()
        if config.token_dropout:
            inputs = replace_tokens(inputs, config.token_dropout, vocab_size)
        inputs, targets = inputs.to(accelerator.device), targets.to(accelerator.device)
        # Gradients are all-reduced across processes only on the last micro-batch.
        sync = micro == config.grad_accum - 1
        with (nullcontext() if sync else accelerator.no_sync(model),
              torch.autocast(accelerator.device.type, dtype=precision, enabled=precision == torch.bfloat16)):
            loss = loss_of(model, inputs, targets)
        accelerator.backward(loss / config.grad_accum)
        loss_sum += loss.detach()
    return loss_sum, step_tokens


def _optimizer_step(accelerator, model, optimizers: list, config: TrainConfig, average: AveragedModel | None):
    """Clip, step and clear the gradients; update the weight average. Returns the gradient norm before clipping."""
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
    for optimizer in optimizers:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if average is not None:
        average.update_parameters(accelerator.unwrap_model(model))
    return grad_norm


def _final_evaluation(accelerator, model, evaluate, last_eval: dict | None, state: TrainState, config: TrainConfig,
                      out_dir: Path, log) -> dict:
    """The evaluation the result reports (on the whole validation split, whatever eval_max_texts says),
    after the last checkpoint is saved."""
    if last_eval is not None and last_eval["step"] == state.step and config.eval_max_texts is None:
        final_eval = last_eval
    else:
        final_eval = _evaluate_and_log(evaluate, None, state, log)
    save_checkpoint(accelerator, model, out_dir, state, keep=config.keep_checkpoints)
    if accelerator.is_main_process:
        print(f"train: stopped by {state.stopped_by} at step {state.step}, {state.tokens:,} tokens, "
              f"val loss {final_eval['val_loss']:.4f}, val bpb {final_eval['val_bpb']:.4f}", file=sys.stderr)
    return final_eval


def next_token_loss(model, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the targets (B, T) given inputs (B, T); IGNORE targets do not count."""
    logits = model(input_ids=inputs, use_cache=False).logits  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)


def make_weight_average(model, decay: float | None) -> AveragedModel | None:
    """An exponential moving average of `model`'s weights (torch's AveragedModel: a frozen copy), or None.

    The decay ramps up as (1 + n) / (10 + n) until it reaches `decay`, so the first steps' random
    weights do not linger in the average of a short run."""
    if decay is None:
        return None

    @torch.no_grad()
    def ema(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1 + n) / (10 + n)))

    average = AveragedModel(model, multi_avg_fn=ema)
    average.module.requires_grad_(False)
    return average


def replace_tokens(inputs: torch.Tensor, share: float, vocab_size: int) -> torch.Tensor:
    """Token dropout: each input token (B, T) is replaced by a uniformly random one with probability
    `share` (targets stay: the model learns to read past noise instead of memorising exact contexts)."""
    noise = torch.randint_like(inputs, vocab_size)
    return torch.where(torch.rand(inputs.shape) < share, noise, inputs)


def learning_rate(state: TrainState, config: TrainConfig, *, ahead: float = 0.0) -> float:
    """Linear warmup over `warmup_steps`, then cosine decay to `min_lr_ratio` over the budget.

    The decay follows the budget's own unit (steps, tokens or minutes). With minutes, progress is
    wall-clock time at the end of the coming step (elapsed + `ahead`, the last step's seconds) over the
    budget, and the last step is at the end: a machine that gets busier mid-run makes fewer steps, but the
    run still ends on time at the minimum learning rate, however fast the machine turned out to be or became.
    """
    warmup = min(1.0, (state.step + 1) / (config.warmup_steps + 1))
    cosine = 0.5 * (1 + math.cos(math.pi * _progress(state, config, ahead=ahead)))
    return config.learning_rate * warmup * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def make_optimizers(model, config: TrainConfig, *, fused: bool) -> list[torch.optim.Optimizer]:
    """The optimizers of the trainable weights: AdamW alone, or Muon plus AdamW.

    AdamW decays matrices (weights, embeddings) and never norms or biases. With `optimizer: muon`,
    Muon (momentum orthogonalised by Newton-Schulz) takes the transformer blocks' matrices and AdamW
    the rest: the embedding (and the output head tied to it), norms and biases, for which Muon's
    orthogonal updates do not suit. Muon's step is scaled to AdamW's update size ("match_rms_adamw"),
    so both share `learning_rate` and `weight_decay`. Muon is torch's, with its orthogonalisation batched
    (`distill.train.muon`).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    embeddings = {id(model.get_input_embeddings().weight)}
    if (head := model.get_output_embeddings()) is not None:
        embeddings.add(id(head.weight))

    def for_muon(p: torch.Tensor) -> bool:
        return config.optimizer == "muon" and p.dim() == 2 and id(p) not in embeddings

    muon = [p for p in params if for_muon(p)]
    rest = [p for p in params if not for_muon(p)]
    groups = [
        {"params": [p for p in rest if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
    ]
    adamw = torch.optim.AdamW([g for g in groups if g["params"]], lr=config.learning_rate,
                              betas=(config.adam_beta1, config.adam_beta2), fused=fused)
    if not muon:
        return [adamw]
    # torch's Muon, batched per shape and in bf16 only where it is native (distill.train.muon)
    native_bf16 = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else native_cpu_bf16()
    return [BatchedMuon(muon, lr=config.learning_rate, weight_decay=config.weight_decay,
                        momentum=config.muon_momentum, adjust_lr_fn="match_rms_adamw",
                        ns_dtype=torch.bfloat16 if native_bf16 else torch.float32), adamw]


def prepare_student(config: TrainConfig, out_dir: Path, *, train_texts: list[str] | None = None):
    """(model, tokenizer) before training: a fresh preset model with its own tokenizer, or the base model.

    From scratch, the tokenizer is trained on `train_texts` once and kept in `out_dir/tokenizer`.
    """
    if not config.from_scratch:
        return load_base_model(config)
    if train_texts is None and not (out_dir / "tokenizer").is_dir():
        raise RunDirError(Problem("no tokenizer yet: training has not started", file=out_dir,
                                  hint="run `distill train RUN` first"))
    tokenizer = load_or_train_tokenizer(out_dir / "tokenizer", train_texts or [], config.tokenizer_vocab,
                                        chat_template=config.chat_template, source=config.tokenizer)
    architecture = model_config(config.preset, config.custom, vocab_size=len(tokenizer),
                                context_length=config.context_length, bos_token_id=tokenizer.bos_token_id,
                                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                dropout=config.dropout)
    return LlamaForCausalLM(architecture), tokenizer


def _progress(state: TrainState, config: TrainConfig, *, ahead: float = 0.0) -> float:
    """How much of the budget is spent, 0..1: the largest fraction over the budgets that are set
    (`ahead` seconds later, for a budget in minutes)."""
    max_steps, max_tokens, max_minutes = config.limits()
    fractions = [0.0]
    if max_steps:
        fractions.append(state.step / max_steps)
    if max_tokens:
        fractions.append(state.tokens / max_tokens)
    if max_minutes:
        end, budget = state.seconds + ahead, 60 * max_minutes  # when the coming step should end
        # The coming step is the last when the run will be out of budget after it (_out_of_budget): it
        # takes the minimum learning rate, however long the steps have become.
        fractions.append(1.0 if ahead and end + ahead / 2 >= budget else end / budget)
    return min(1.0, max(fractions))


def _out_of_budget(state: TrainState, config: TrainConfig, *, ahead: float = 0.0) -> str | None:
    """Which budget is spent, if one is. A budget in minutes is spent once the next step (as long as the
    last, `ahead` seconds) would end more than half a step past it: the run ends nearest the budget."""
    max_steps, max_tokens, max_minutes = config.limits()
    if max_steps and state.step >= max_steps:
        return "max_steps"
    if max_tokens and state.tokens >= max_tokens:
        return "max_tokens"
    if max_minutes and state.seconds + ahead / 2 >= 60 * max_minutes:
        return "max_minutes"
    return None


def _evaluate_and_log(evaluate, limit: int | None, state: TrainState, log) -> dict:
    started = time.perf_counter()
    scores = evaluate(limit)
    row = {"step": state.step, "tokens": state.tokens, "seconds": round(state.seconds, 3), **scores,
           "eval_seconds": round(time.perf_counter() - started, 3)}  # what validation costs the run
    log(row)
    return row


def _early_stop(scores: dict, state: TrainState, config: TrainConfig) -> str | None:
    """Track the best validation loss; "early_stopping" once it has not improved for `patience` evals."""
    if state.best_val_loss is None or scores["val_loss"] < state.best_val_loss:
        state.best_val_loss, state.evals_since_best = scores["val_loss"], 0
    else:
        state.evals_since_best += 1
    patience = config.early_stopping_patience
    return "early_stopping" if patience is not None and state.evals_since_best >= patience else None


def _trains_in_bf16(config: TrainConfig) -> bool:
    """bf16 autocast (fp32 master weights) on request, or with "auto" where matmuls run natively in
    bf16: GPUs with bf16 units, and CPUs with AVX512-BF16 or AMX (about twice their fp32 matmul rate,
    and 1.7x the training tokens/s on a 2-core Zen 4). Elsewhere fp32: emulated bf16 is slower."""
    if config.precision != "auto":
        return config.precision == "bf16"
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return native_cpu_bf16()


def native_cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (oneDNN's own test, as torch uses it)."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _check_inputs(examples: list[dict], config: TrainConfig, kind: str) -> str:
    """Cheap checks before any work; returns the fingerprint of everything that decides the weights."""
    if kind not in ("text", "instruct", "chat"):
        raise ConfigError(Problem(f"kind must be 'text', 'instruct' or 'chat', not {kind!r}", key="kind"))
    problems = [Problem(f"example {i} has no non-empty 'text'") for i, e in enumerate(examples)
                if not isinstance(e.get("text"), str) or not e["text"]][:5]
    if kind == "instruct":
        problems += [Problem(f"example {i} has no 'prompt' (instruct examples need one)")
                     for i, e in enumerate(examples) if not isinstance(e.get("prompt"), str) or not e["prompt"]][:5]
    if not examples:
        problems.append(Problem("no examples to train on"))
    if problems:
        raise ConfigError(*problems)
    rows = [(e.get("id"), e.get("prompt", ""), e["text"], *([e["teacher_digest"]] if e.get("teacher_digest") else []))
            for e in examples]
    supervised = {k: v for k, v in config.weights_fingerprint_fields().items() if k != "preference"}  # tuned after
    return stable_fingerprint(kind, rows, supervised)


def _finished(out_dir: Path, inputs_fingerprint: str) -> TrainResult | None:
    """The stored result of a finished run with these very inputs, if there is one."""
    path = out_dir / "result.json"
    if not path.is_file():
        return None
    stored = read_json_file(path, made_by="distill train RUN")
    if stored.pop("fingerprint", None) != inputs_fingerprint:
        return None
    stored.pop("preference", None)  # what the preference phase tuned afterwards (distill.train.preference)
    try:
        for key in ("model_dir", "metrics_path", "loss_curve_path"):
            stored[key] = Path(stored[key])
        return TrainResult(**stored)
    except (KeyError, TypeError):
        raise RunDirError(Problem("wrong shape: not a training result distill wrote", file=path,
                                  hint=f"delete {path} and run `distill train RUN` again (it resumes from the last checkpoint)")) from None


def _claim(out_dir: Path, inputs_fingerprint: str, config: TrainConfig, kind: str, replace_other: bool) -> None:
    """Record what this folder trains; refuse to resume a run that trained something else."""
    path = out_dir / "run.json"
    if path.is_file() and replace_other and json.loads(path.read_text())["fingerprint"] != inputs_fingerprint:
        shutil.rmtree(out_dir)
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored["fingerprint"] == inputs_fingerprint:
            return
        changed = [k for k, v in config.weights_fingerprint_fields().items() if stored["config"].get(k) != v]
        what = f"settings changed: {', '.join(changed)}" if changed else "the training examples changed"
        raise RunDirError(Problem(f"{out_dir} holds a training run with other inputs ({what})", file=path,
                                  hint=f"restore the old settings to resume it, or delete {out_dir} to train afresh"))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"fingerprint": inputs_fingerprint, "kind": kind, "config": config.model_dump(mode="json")})

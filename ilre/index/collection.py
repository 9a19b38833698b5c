"""A collection indexed on a Ray cluster: one index per entry of a folder, spread over the workers.

``python -m ilre.index --context DIR --out INDEX_DIR --ray`` makes ``INDEX_DIR/<entry>.ilre`` for
each file and each subfolder of DIR (a subfolder is one index of its files, as ``--context`` reads
a folder), each as a Ray task that loads the model once per worker process and encodes exactly as
the command does alone. An entry whose index exists and is up to date with the files is skipped,
so a job that failed or was stopped resumes where it was; an index that is out of date is brought
up to date (``update.py``). Progress is one bar over the entries.
"""

from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path

from .format import SUFFIX

log = logging.getLogger(__name__)


def entries(folder: Path) -> list[Path]:
    """The files and subfolders of ``folder`` that become indexes (hidden ones left out), sorted."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and (p.is_file() or p.is_dir()))


@functools.lru_cache(maxsize=1)
def _pipeline(model, device, dtype, threads, config_items):
    """The worker process's pipeline, loaded once as the command line loads it."""
    from .. import cli
    from ..config import ILReConfig

    options = argparse.Namespace(model=model, device=device, dtype=dtype, threads=threads)
    return cli.load_pipeline(options, ILReConfig(**dict(config_items)))


def index_one(entry: str, out: str, model, device, dtype, threads, config_items, filters: dict) -> str:
    """Index one entry into ``out`` (or bring it up to date); what was done, in a few words."""
    from ..sources import read_sources
    from .update import update

    ilre = _pipeline(model, device, dtype, threads, config_items)
    sources = read_sources([Path(entry)], filters["include"], filters["exclude"], filters["max_file_bytes"])
    out_path = Path(out)
    if out_path.is_file() and Path(entry).is_dir():
        try:
            encoded, change = update(ilre, ilre.load_index(out_path), sources)
        except ValueError as exc:  # another model or settings: make it again
            log.info("%s: %s; made again", out_path, exc)
        else:
            if change:
                encoded.save(out_path)
            return f"{Path(entry).name}: {change}"
    elif out_path.is_file() and _same_text(out_path, sources.text):
        return f"{Path(entry).name}: up to date"
    ilre.encode(sources).save(out_path)
    return f"{Path(entry).name}: indexed"


def _same_text(path: Path, text: str) -> bool:
    import hashlib

    from .format import read_meta

    try:
        meta = read_meta(path)
    except Exception:  # damaged: made again
        return False
    return meta.get("context", {}).get("sha256") == hashlib.sha256(text.encode("utf-8")).hexdigest()


def run(args: argparse.Namespace, config, filters: dict) -> int:
    """The whole job: every entry of ``args.context[0]`` as a Ray task, results as they come."""
    try:
        import ray
    except ImportError:
        raise ValueError("--ray runs on a Ray cluster: pip install 'ilre[ray]'") from None
    from tqdm.auto import tqdm

    folder, out_dir = args.context[0], args.out
    if len(args.context) != 1 or not folder.is_dir():
        raise ValueError("--ray indexes the entries of one folder: give --context FOLDER")
    if out_dir is None:
        raise ValueError("--ray writes one index per entry: name the folder for them with --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = entries(folder)
    if not todo:
        raise ValueError(f"{folder} is empty: nothing to index")
    ray.init(address=args.ray_address, log_to_driver=args.verbose)
    try:
        task = ray.remote(num_cpus=args.worker_cpus)(index_one)
        items = tuple(sorted((k, v) for k, v in vars(config).items()))
        pending = [task.remote(str(e), str(out_dir / (e.name + SUFFIX)), args.model, args.device, args.dtype,
                               args.threads, items, filters) for e in todo]
        failed = 0
        with tqdm(total=len(pending), unit="index", desc="indexing", disable=args.no_progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                try:
                    bar.write(ray.get(done[0]))
                except ray.exceptions.RayTaskError as exc:
                    failed += 1
                    bar.write(f"failed: {str(exc.cause).splitlines()[0] if exc.cause else exc}")
                bar.update(1)
    finally:
        ray.shutdown()
    print(f"{len(todo) - failed} of {len(todo)} entries indexed in {out_dir}"
          + (f"; {failed} failed: run the same command again to retry them" if failed else ""))
    return 1 if failed else 0

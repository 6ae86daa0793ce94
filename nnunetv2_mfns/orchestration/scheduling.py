"""Running the method x fold jobs: one after another, or in parallel with one job per GPU."""
from __future__ import annotations

import queue
import sys
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Callable, Optional, Sequence

from nnunetv2_mfns.orchestration.methods import Method

Job = tuple[Method, int]


def run_jobs(jobs: Sequence[Job], work: Callable[[Method, int, Optional[dict]], None], gpus: Sequence[str],
             base_env: dict, out: Callable[[str], None] = print) -> None:
    """Calls work(method, fold, env) for every job, with a tqdm bar. Without GPUs the jobs run in order with
    env None (the pipeline's own environment); with GPUs at most one job per GPU runs at a time, its child
    restricted to that GPU by CUDA_VISIBLE_DEVICES. The first failure stops the jobs not yet started and is
    raised."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="train+predict (method x fold)", unit="fold", file=sys.stderr, dynamic_ncols=True)
    try:
        if not gpus:
            for m, f in jobs:
                bar.set_postfix_str(f"{m.name} fold {f}")
                work(m, f, None)
                bar.update(1)
            return
        free: queue.Queue = queue.Queue()
        for g in gpus:
            free.put(g)

        def one(m: Method, f: int) -> None:
            gpu = free.get()
            try:
                out(f"{m.name} fold {f} on GPU {gpu}")
                work(m, f, dict(base_env, CUDA_VISIBLE_DEVICES=gpu))
            finally:
                free.put(gpu)
                bar.update(1)

        with ThreadPoolExecutor(max_workers=len(gpus)) as ex:
            futures = [ex.submit(one, m, f) for m, f in jobs]
            _, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for p in pending:
                p.cancel()
            for fut in futures:
                if fut.done() and not fut.cancelled() and fut.exception() is not None:
                    raise fut.exception()
    finally:
        bar.close()

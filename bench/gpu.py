"""GPU throughput of the fine-tuning step: float32 vs mixed precision, one GPU vs all GPUs.

Run on a machine with NVIDIA GPUs (the project installed, e.g. in the component image):

    python -m bench.gpu [--base-model resnet50] [--image-size 224] [--batch-size 64] [--steps 30]

It trains the product's own classifier (``components.finetune.model.build_classifier``, the whole
base unfrozen as in the fine-tune phase, BatchNormalization frozen) on random pixels held on
the device, so the input pipeline is out of the measurement, and prints one table of training
images per second for each configuration plus the speed-ups, in well under 5 minutes. The
global batch is ``batch_size`` times the number of replicas (what ``run_finetune_step`` does).
Without a GPU it says so and exits with status 2: nothing here switches on without one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _throughput(base_model: str, image_size: int, batch_size: int, steps: int, gpus: int, mixed: bool, xla: bool) -> float:
    import keras
    import numpy as np
    import tensorflow as tf

    from components import base_models
    from components.finetune.model import build_classifier, set_trainable
    from components.finetune.settings import FinetuneSettings

    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    devices = [f"/gpu:{i}" for i in range(gpus)]
    strategy = tf.distribute.MirroredStrategy(devices) if gpus > 1 else tf.distribute.OneDeviceStrategy(devices[0])
    global_batch = batch_size * gpus
    with strategy.scope():
        base = base_models.build_base_model(base_model, image_size, None)
        settings = FinetuneSettings(base_model=base_model, base_weights="none", fast_path=False)
        model = build_classifier(base, 10, settings)
        set_trainable(base, "all")
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy", jit_compile=xla)
    x = np.random.default_rng(0).uniform(-1, 1, (global_batch, image_size, image_size, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 10, global_batch)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    data = strategy.experimental_distribute_dataset(data) if gpus > 1 else data
    model.fit(data, steps_per_epoch=5, epochs=1, verbose=0)  # tracing and autotuning
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    keras.backend.clear_session()
    return steps * global_batch / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--base-model", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64, help="per GPU")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--xla", action="store_true", help="also measure XLA (jit_compile) with mixed precision")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)

    import tensorflow as tf
    from tabulate import tabulate

    n = len(tf.config.list_physical_devices("GPU"))
    if n == 0:
        print("no GPU visible: this benchmark needs one (mixed precision and MirroredStrategy are GPU-only)", file=sys.stderr)
        return 2
    configs = [("1 GPU", 1, False, False), ("1 GPU", 1, True, False)]
    if n > 1:
        configs += [(f"{n} GPUs", n, False, False), (f"{n} GPUs", n, True, False)]
    if args.xla:
        configs += [(f"{n} GPU(s)", n, True, True)]
    rows = []
    for label, gpus, mixed, xla in configs:
        ips = _throughput(args.base_model, args.image_size, args.batch_size, args.steps, gpus, mixed, xla)
        rows.append({"devices": label, "precision": "mixed_float16" if mixed else "float32", "xla": xla, "images_per_second": round(ips, 1)})
    base = rows[0]["images_per_second"]
    table = [[r["devices"], r["precision"], r["xla"], r["images_per_second"], f"{r['images_per_second'] / base:.2f}x"] for r in rows]
    print(f"{args.base_model} at {args.image_size} px, batch {args.batch_size} per GPU, {args.steps} timed steps")
    print(tabulate(table, headers=["devices", "precision", "XLA", "images/s", "vs 1 GPU float32"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

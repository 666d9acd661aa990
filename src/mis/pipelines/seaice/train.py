"""Training ViSual_IceD-family networks on paired SAR + MSI scenes (issue 17; the CLI comes with the task package).

Scenes come from the seeded synthetic generator (`synthetic.py`: clouds over the MSI, wind-roughened water in the
SAR), rendered once into a pool, or from the user's paired rasters with masks (`pairs`: a CSV `sar,msi,mask[,split]`),
each read whole onto its grids exactly as `mis seaice` reads it (the reference grid, band selection, dB / L2A
conversion, the joint nodata mask) with the mask read onto the coarse grid by nearest neighbour; pixels without data
in any of the three are left out of the loss and the scores. Each step takes random aligned crops of both grids (the finer one `ratio` times
larger) with flips and 90-degree rotations; the label is the ice mask on the coarse grid. Inputs are scaled as
upstream scales its (min-max to [-1, 1]) but with fixed ranges, so a scene's scaling does not depend on its
content: SAR sigma0 from [-35, 5] dB, MSI reflectance from [0, 1]. Loss: class-balanced BCE on logits
(upstream's pos_weight 0.8). Adam; validation F1 on fixed fresh scenes; the best validation's weights are kept.

`ablation()` trains the dual-encoder network and its three baselines (stacked inputs, SAR only, MSI only) with
the same budget and seeds and scores them on the same fresh scenes, as the paper's comparison.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from mis.checkpoints import build_card, save_checkpoint
from mis.errors import InputError
from mis.models.visual_iced import VisualIced, VisualIcedConfig
from mis.pipelines.seaice.scores import Confusion
from mis.pipelines.seaice.pipeline import SeaIcePipeline, scale_inputs
from mis.pipelines.seaice.synthetic import SyntheticScene, make_scene
from mis.runtime.training import RunOptions, StepSeededBatches, TrainConfig, Trainer, resume_settings

TASK = "seaice"
SAR_DB_RANGE = (-35.0, 5.0)
PREPROCESSING = {"sar_db_range": list(SAR_DB_RANGE), "msi_range": [0.0, 1.0], "sar_bands": "HH,HV",
                 "msi_bands": "B02,B03,B04,B08"}
VAL_SEED = 10_000_000


PAPER_WIDTHS = (64, 128, 256, 512, 512)


def demo_network(mode: str = "dual", ratio: int = 4, finer: str = "msi", preset: str = "demo") -> VisualIcedConfig:
    """The demo family on Sentinel-1 HH/HV + Sentinel-2 B02/B03/B04/B08, MSI 4x finer (10 m vs 40 m);
    preset "paper" gives it upstream's widths (for a GPU)."""
    widths = {"widths": PAPER_WIDTHS} if preset == "paper" else {}
    return VisualIcedConfig.demo(sar_channels=2, msi_channels=4, ratio=ratio, finer=finer, mode=mode, **widths)


@dataclass(kw_only=True)
class SeaIceTrainOptions(RunOptions):
    out: Path
    network: VisualIcedConfig = field(default_factory=demo_network)
    steps: int = 1500
    batch_size: int = 8
    crop: int = 64                 # coarse-grid pixels per side
    lr: float = 1e-3
    pos_weight: float = 0.8        # upstream's class balance
    scenes: int = 60               # synthetic scenes in the pool
    scene_size: int = 128          # their coarse side
    val_scenes: int = 12
    validate_every: int = 250
    pairs: Path | None = None      # real scenes: CSV sar,msi,mask[,split] (paths relative to it)
    scene_options: object = None   # run.SceneOptions for reading them (grid, bands, units, offset)


def scene_arrays(scene: SyntheticScene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scaled as the pipeline scales them (the card's ranges)."""
    sar, msi = scale_inputs(scene.sar, scene.msi, {"preprocessing": PREPROCESSING})
    return sar, msi, scene.ice.astype(np.float32)


@dataclass
class TrainingRow:
    sar: Path
    msi: Path
    mask: Path
    split: str        # "train" | "val" | "" (decided by position)


def read_training_csv(path: Path) -> list[TrainingRow]:
    """Columns sar,msi,mask and an optional split (train / val); paths relative to the CSV's folder."""
    from mis.pipelines.seaice.run import read_csv_rows

    out = []
    for row in read_csv_rows(path, ("sar", "msi", "mask"), "training scenes"):
        split = (row.get("split") or "").strip().lower()
        if split not in ("", "train", "val"):
            raise InputError(path, f"split {split!r}: train or val")
        out.append(TrainingRow(*(path.parent / row[k] for k in ("sar", "msi", "mask")), split))
    return out


def split_rows(rows: list[TrainingRow]) -> tuple[list[TrainingRow], list[TrainingRow]]:
    """The CSV's split when it gives one; else every sixth scene (at least one) is held out for validation, so the
    best-step choice does not see the scenes it is chosen on."""
    if any(r.split for r in rows):
        train = [r for r in rows if r.split != "val"]
        val = [r for r in rows if r.split == "val"]
    elif len(rows) == 1:
        train = val = rows
    else:
        val = rows[5::6] or rows[-1:]
        train = [r for r in rows if r not in val]
    return train, val


def reader_view(network: VisualIcedConfig, preprocessing: dict) -> SeaIcePipeline:
    """What `run.open_scene` reads a scene for (bands, ratio, the joint valid mask): a pipeline over an untrained
    network of the run's config, built once per training."""
    return SeaIcePipeline(VisualIced(network), {"task": TASK, "preprocessing": preprocessing})


def read_training_scene(row: TrainingRow, network: VisualIcedConfig, preprocessing: dict, scene_options,
                        view: SeaIcePipeline | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sar, msi, ice) as `scene_arrays` gives them; ice is NaN where the mask or either input has no data. The
    scene is cropped to a multiple of the network's size on the coarse grid."""
    from rasterio.windows import Window

    from mis.pipelines.seaice.run import Pair, open_scene
    from mis.io.raster import aligned_reader, s2_reflectance, sar_to_db

    view = view or reader_view(network, preprocessing)
    scene = open_scene(view, Pair(row.sar, row.msi), scene_options)
    multiple, r = view.model.size_multiple, network.ratio
    try:
        h, w = scene.grid.height // multiple * multiple, scene.grid.width // multiple * multiple
        if min(h, w) == 0:
            raise InputError(row.sar, f"scene of {scene.grid.width}x{scene.grid.height} pixels is smaller than the "
                             f"network's minimum {multiple}")
        coarse, fine = Window(0, 0, w, h), Window(0, 0, w * r, h * r)
        sar_window, msi_window = (fine, coarse) if network.finer == "sar" else (coarse, fine)
        sar, sar_valid = scene.sar_reader.read(sar_window)
        msi, msi_valid = scene.msi_reader.read(msi_window)
        sar_db = sar_to_db(sar, scene.sar_units, scene.sources["sar"])
        msi = s2_reflectance(msi, scene.msi_offset) if scene.msi_offset is not None else msi
        valid = view.coarse_valid(sar_valid & np.isfinite(sar_db).all(0), msi_valid & np.isfinite(msi).all(0))
        with aligned_reader(row.mask, scene.grid, [1], "nearest") as mask_reader:
            mask, mask_valid = mask_reader.read(coarse)
    finally:
        scene.close()
    mask = mask[0]
    valid &= mask_valid & np.isin(mask, (0, 1))
    if not valid.any():
        raise InputError(row.mask, "no pixel where the mask (0 water / 1 ice) and both rasters have data")
    sar_s, msi_s = scale_inputs(sar_db, msi, {"preprocessing": preprocessing})
    ice = np.where(valid, mask, np.nan).astype(np.float32)
    return np.nan_to_num(sar_s), np.nan_to_num(msi_s), ice


def real_network(options: SeaIceTrainOptions, first: TrainingRow) -> tuple[VisualIcedConfig, dict]:
    """The network's channel counts follow the bands selected in the first scene; the card records which."""
    from mis.io.raster import open_raster, select_bands

    so = options.scene_options
    sar_bands = select_bands(open_raster(first.sar), so.sar_bands)
    msi_bands = select_bands(open_raster(first.msi), so.msi_bands)
    network = replace(options.network, sar_channels=len(sar_bands), msi_channels=len(msi_bands))
    preprocessing = {**PREPROCESSING, "sar_bands": so.sar_bands, "msi_bands": so.msi_bands}
    return network, {k: v for k, v in preprocessing.items() if v is not None}


def real_pools(options: SeaIceTrainOptions, log: Callable[[str], None]) -> tuple[VisualIcedConfig, dict, list, list]:
    rows = read_training_csv(options.pairs)
    network, preprocessing = real_network(options, rows[0])
    train_rows, val_rows = split_rows(rows)
    view = reader_view(network, preprocessing)
    read = {id(r): read_training_scene(r, network, preprocessing, options.scene_options, view) for r in rows}
    for row in rows:
        ice = read[id(row)][2]
        if min(ice.shape) < options.crop:
            raise InputError(row.sar, f"scene of {ice.shape[1]}x{ice.shape[0]} coarse pixels is smaller than the "
                             f"crop {options.crop} (lower --crop)")
    log(f"read {len(train_rows)} training and {len(val_rows)} validation scenes from {options.pairs}")
    return network, preprocessing, [read[id(r)] for r in train_rows], [read[id(r)] for r in val_rows]


def scene_pool(options: SeaIceTrainOptions, seed_base: int, count: int) -> list[tuple]:
    net = options.network
    return [scene_arrays(make_scene(seed_base + k, coarse_size=options.scene_size, ratio=net.ratio, finer=net.finer))
            for k in range(count)]


def _crop_pair(sar, msi, ice, crop: int, ratio: int, finer: str, rng: np.random.Generator):
    h, w = ice.shape
    y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    fine = slice(y * ratio, (y + crop) * ratio), slice(x * ratio, (x + crop) * ratio)
    coarse = slice(y, y + crop), slice(x, x + crop)
    sar_c = sar[:, fine[0], fine[1]] if finer == "sar" else sar[:, coarse[0], coarse[1]]
    msi_c = msi[:, fine[0], fine[1]] if finer == "msi" else msi[:, coarse[0], coarse[1]]
    return sar_c, msi_c, ice[coarse[0], coarse[1]]


def _augment(arrays, rng: np.random.Generator):
    k, flip = int(rng.integers(4)), rng.random() < 0.5
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(-2, -1))
        out.append(np.ascontiguousarray(a[..., ::-1] if flip else a))
    return out


def batch_sampler(pool: list[tuple], options: SeaIceTrainOptions) -> Callable:
    net = options.network

    def sample(rng: np.random.Generator, step: int) -> dict[str, torch.Tensor]:
        rows = []
        for _ in range(options.batch_size):
            sar, msi, ice = pool[int(rng.integers(len(pool)))]
            rows.append(_augment(_crop_pair(sar, msi, ice, options.crop, net.ratio, net.finer, rng), rng))
        return {"sar": torch.from_numpy(np.stack([r[0] for r in rows])),
                "msi": torch.from_numpy(np.stack([r[1] for r in rows])),
                "ice": torch.from_numpy(np.stack([r[2] for r in rows]))[:, None]}

    return sample


def f1_scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Binary scores with ice as the positive class (the paper's F1), IoU and accuracy (`evaluate.Confusion`)."""
    confusion = Confusion()
    confusion.add(predicted.astype(bool).ravel(), truth.astype(bool).ravel())
    return {k: float(v) for k, v in confusion.scores().items() if k in ("f1", "iou", "accuracy")}


@torch.no_grad()
def predict(model: VisualIced, sar: np.ndarray, msi: np.ndarray, device) -> np.ndarray:
    logits = model(torch.from_numpy(sar)[None].to(device), torch.from_numpy(msi)[None].to(device))
    channel = logits[:, -1]            # an imported 2-channel head: channel 1 is ice (upstream's inference)
    return (channel[0] > 0).cpu().numpy()


def score_scenes(model: VisualIced, scenes: list[tuple], device) -> dict[str, float]:
    """Pixels whose label is NaN (no data in the mask or an input) are not scored."""
    model.eval()
    predicted = np.concatenate([predict(model, sar, msi, device).ravel() for sar, msi, _ in scenes])
    truth = np.concatenate([ice.ravel() for _, _, ice in scenes])
    labelled = np.isfinite(truth)
    return f1_scores(predicted[labelled], truth[labelled] > 0.5)


def make_loss(options: SeaIceTrainOptions) -> Callable:
    def loss_fn(model, batch):
        logits = model(batch["sar"], batch["msi"])[:, -1:].float()
        weight = torch.tensor(options.pos_weight, device=logits.device)
        labelled = torch.isfinite(batch["ice"])            # real masks: no data is not water
        per_pixel = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(batch["ice"]), pos_weight=weight,
                                                       reduction="none")
        loss = (per_pixel * labelled).sum() / labelled.sum().clamp(min=1)
        return loss, {}

    return loss_fn


def train_seaice(options: SeaIceTrainOptions, log: Callable[[str], None] = lambda _: None) -> dict:
    start = time.perf_counter()
    preprocessing = PREPROCESSING
    if options.pairs is not None:
        network, preprocessing, pool, val = real_pools(options, log)
        options = replace(options, network=network)
    else:
        pool = scene_pool(options, options.seed * 100_003, options.scenes)
        val = scene_pool(options, VAL_SEED, options.val_scenes)
        log(f"rendered {len(pool)} training and {len(val)} validation scenes in {time.perf_counter() - start:.0f} s")
    torch.manual_seed(options.seed)
    model = VisualIced(options.network)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    config = TrainConfig(out_dir=options.out, max_steps=options.steps, lr=options.lr, grad_clip=None,
                         precision=options.precision, checkpoint_every=options.validate_every, log_every=50,
                         validate_every=options.validate_every, best_metric="val_f1", best_mode="max",
                         seed=options.seed, device=options.device, resume=options.resume, progress=options.progress,
                         description=f"ViSual_IceD ({options.network.mode})", settings=resume_settings(options))

    def validate(trainer: Trainer) -> dict:
        return {f"val_{k}": v for k, v in score_scenes(trainer.module(), val, trainer.device).items()}

    trainer = Trainer(model, optimizer, None, config, loss_fn=make_loss(options), validate_fn=validate)
    trainer.fit(StepSeededBatches(batch_sampler(pool, options), options.seed))
    best = trainer.restore_best() or {}
    model = trainer.module().cpu().eval()
    seconds = time.perf_counter() - start
    metrics = {"val_f1": best.get("val_f1"), "best_step": best.get("best_step"), "seconds": seconds}
    card = build_card("visual_iced", options.network.to_dict(), task=TASK,
                      preprocessing=preprocessing,
                      training={"steps": options.steps, "batch_size": options.batch_size, "crop": options.crop,
                                "lr": options.lr, "seed": options.seed,
                                "scenes": str(options.pairs) if options.pairs else f"{options.scenes} synthetic",
                                "command": options.command}, metrics=metrics)
    path = options.out / "model.safetensors"
    save_checkpoint(path, model, card, half=options.half)
    return {"checkpoint": str(path), "model": model, "metrics": metrics}


ABLATION_MODES = ("dual", "stacked", "sar", "msi")


def ablation(out: Path, *, steps: int, test_scenes: int = 24, modes: tuple[str, ...] = ABLATION_MODES,
             log: Callable[[str], None] = print, **settings) -> list[dict]:
    """Dual vs stacked vs SAR-only vs MSI-only with one budget and seed, scored on the same fresh scenes (seeds
    neither training nor validation uses)."""
    rows = []
    for mode in modes:
        options = SeaIceTrainOptions(out=out / mode, network=demo_network(mode), steps=steps, progress=False,
                                     **settings)
        result = train_seaice(options, log)
        test = scene_pool(options, 20_000_000, test_scenes)
        scores = score_scenes(result["model"], test, torch.device("cpu"))
        rows.append({"mode": mode, **scores, "seconds": result["metrics"]["seconds"],
                     "parameters": sum(p.numel() for p in result["model"].parameters())})
        log(f"{mode}: F1 {scores['f1']:.4f} IoU {scores['iou']:.4f} accuracy {scores['accuracy']:.4f} "
            f"({result['metrics']['seconds']:.0f} s)")
    return rows

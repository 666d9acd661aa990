"""The DSA frame interpolation task package: GaraMoSt (two frames + timesteps -> the frames in between)."""
from mis.spec import Command, ModelFamily, ShippedModel, TaskSpec

SPEC = TaskSpec(
    name="interpolate",
    title="GaraMoSt DSA / angiography frame interpolation: any N, any timestep, one encoder pass per pair",
    panel="Medical",
    pipeline="mis.pipelines.interpolate.pipeline:InterpolationPipeline",
    families=(
        # Module names are upstream's (model/feature_extractor.py, flow_estimation.py, refine.py): the released
        # `.pkl` checkpoints load by name after DDP's `module.` prefix is stripped (docs/garamost_keymap.md).
        # The defaults of GaraMoStConfig are the released 3-channel, r = [7, 7] model (inf1); inf2 / inf3 take
        # --config '{"lambda_r": [7, 29]}'.
        ModelFamily("garamost", "mis.models.garamost", "GaraMoSt", "GaraMoStConfig",
                    import_preprocessing="mis.pipelines.interpolate.pipeline:import_preprocessing"),
    ),
    models=(
        ShippedModel("interpolate_garamost_demo", "interpolate_garamost_demo.safetensors",
                     "GaraMoSt demo config (grayscale, F = 8, 1.35 M parameters); 240 synthetic DSA and coronary "
                     "sequences, 3000 steps (30 min on a 2-core CPU)",
                     quality="every other frame of a real coronary cine it never saw: PSNR 29.57 vs linear blending "
                             "28.94 dB (+0.63), SSIM 0.776 vs 0.736 (upstream reports > 38 dB on its private DSA)",
                     instead="for real use import the released GaraMoSt weights (`mis models import --task "
                             "interpolate`) or train on your sequences on a GPU (`mis train interpolate`)"),
    ),
    default_model="interpolate_garamost_demo",
    fast_model="interpolate_garamost_demo",
    commands=(
        Command("interpolate", "mis.cli.interpolate:interpolate"),
        Command("interpolate", "mis.cli.interpolate:train_interpolate", group="train"),
        Command("interpolate", "mis.cli.interpolate:evaluate_interpolate", group="evaluate"),
    ),
    input_kinds=("image", "sequence"),
    demo="mis.pipelines.interpolate.demo:demo",
    sample_data="mis.pipelines.interpolate.synthetic:write_sample_data",
    api={"InterpolationPipeline": "mis.pipelines.interpolate.pipeline",
         "InterpolationOutput": "mis.pipelines.interpolate.pipeline"},
)

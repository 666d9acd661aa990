"""The bandwidth extension task package: AP-BWE (narrowband amplitude + phase spectra -> wideband ones)."""
from mis.spec import Command, ModelFamily, ShippedModel, TaskSpec

INSTEAD = ("for real use import the released AP-BWE weights for your rate pair (`mis models import --task bwe`) "
           "or train on a GPU (`mis train bwe --preset paper`)")

SPEC = TaskSpec(
    name="bwe",
    title="AP-BWE speech bandwidth extension: narrowband -> 16 or 48 kHz",
    panel="Audio",
    pipeline="mis.pipelines.bwe.pipeline:BandwidthExtensionPipeline",
    families=(
        # Module names are upstream's (models/model.py, APNet_BWE_Model): the released per-rate-pair generators
        # load by name (docs/apbwe_keymap.md); their rate pair goes in with --preprocessing.
        ModelFamily("apbwe", "mis.models.apbwe", "APBWE", "APBWEConfig",
                    import_preprocessing="mis.pipelines.bwe.pipeline:import_preprocessing"),
    ),
    models=(
        ShippedModel("bwe_apbwe_demo_16k_48k", "bwe_apbwe_demo_16k_48k.safetensors",
                     "AP-BWE, 4 blocks of 128 channels, 16 -> 48 kHz; 12 VCTK / Hi-Fi TTS clips",
                     quality="", instead=INSTEAD),
        ShippedModel("bwe_apbwe_demo_8k_16k", "bwe_apbwe_demo_8k_16k.safetensors",
                     "AP-BWE, 4 blocks of 128 channels, 8 -> 16 kHz; VCTK / VoiceBank clips",
                     quality="", instead=INSTEAD),
    ),
    default_model="bwe_apbwe_demo_16k_48k",
    fast_model="bwe_apbwe_demo_16k_48k",
    commands=(
        Command("bwe", "mis.cli.bwe:bwe"),
        Command("bwe", "mis.cli.bwe:train_bwe", group="train"),
        Command("bwe", "mis.cli.bwe:evaluate_bwe", group="evaluate"),
    ),
    input_kinds=("audio",),
    demo="mis.pipelines.bwe.demo:demo",
    sample_data="mis.pipelines.bwe.synthetic:write_sample_data",
    api={"BandwidthExtensionPipeline": "mis.pipelines.bwe.pipeline",
         "BweOutput": "mis.pipelines.bwe.pipeline"},
)

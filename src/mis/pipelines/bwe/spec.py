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
                     "AP-BWE, 4 blocks of 128 channels, 16 -> 48 kHz; 8 VCTK + 2 Hi-Fi TTS clips (27 s)",
                     quality="LSD 1.15 vs sinc 3.53 on 4 held-out VCTK clips (the paper's model: 0.72 vs 2.57)",
                     instead=INSTEAD),
        ShippedModel("bwe_apbwe_demo_8k_16k", "bwe_apbwe_demo_8k_16k.safetensors",
                     "AP-BWE, 4 blocks of 128 channels, 8 -> 16 kHz; LJSpeech, VoiceBank, Hi-Fi TTS, LibriTTS (202 s)",
                     quality="LSD 1.02 vs sinc 2.27 on 4 held-out VCTK speakers (the paper's model: 0.69 vs 1.80)",
                     instead=INSTEAD),
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

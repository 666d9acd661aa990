"""The vocoder task package: APNet (mel -> amplitude and phase spectra -> waveform) and `mis mel`."""
from mis.spec import Command, KeyMap, ModelFamily, ShippedModel, TaskSpec

SPEC = TaskSpec(
    name="vocoder",
    title="APNet neural vocoder: log-mel -> amplitude + phase spectra -> waveform",
    panel="Audio",
    pipeline="mis.pipelines.vocoder.pipeline:VocoderPipeline",
    families=(
        # Module names follow upstream APNet `models.py`; upstream used torch.nn.utils.weight_norm (weight_g,
        # weight_v), we use torch's weight-norm parametrization. Upstream's released model is the 16 kHz one
        # (n_fft 1024, hop 80, win 320).
        ModelFamily("apnet", "mis.models.apnet", "APNet", "APNetConfig",
                    key_map=KeyMap(suffix_renames=((".weight_g", ".parametrizations.weight.original0"),
                                                   (".weight_v", ".parametrizations.weight.original1"))),
                    import_defaults={"hop_length": 80, "win_length": 320},
                    import_preprocessing="mis.pipelines.vocoder.mel:card_preprocessing"),
    ),
    models=(
        ShippedModel("vocoder_apnet_demo_22k", "vocoder_apnet_demo_22k.safetensors",
                     "APNet, 128 channels, amplitude prior, 22.05 kHz HiFi-GAN mel convention; 18 LJSpeech clips",
                     quality="with its default 32 Griffin-Lim iterations from the network's phase (16 on the mel's "
                             "pseudo-inverse amplitude, then 16 on its own): PESQ-wb 3.69 vs Griffin-Lim 3.31, F0 "
                             "RMSE 18.5 vs 19.05 cents, F0 frame error 4.2 vs 4.8 % (pYIN) on unseen LJSpeech clips "
                             "(pure network 2.29); one female speaker's voice: on other voices its pitch is less "
                             "reliable than Griffin-Lim's",
                     instead="for real use import upstream APNet weights (`mis models import --task vocoder`) or "
                             "train on a GPU (`mis train vocoder`)"),
    ),
    default_model="vocoder_apnet_demo_22k",
    fast_model="vocoder_apnet_demo_22k",
    commands=(
        Command("vocode", "mis.cli.vocoder:vocode"),
        Command("mel", "mis.cli.vocoder:mel"),
        Command("vocoder", "mis.cli.vocoder:train_vocoder", group="train"),
        Command("vocoder", "mis.cli.vocoder:evaluate_vocoder", group="evaluate"),
    ),
    input_kinds=("audio", "mel"),
    demo="mis.pipelines.vocoder.demo:demo",
    sample_data="mis.pipelines.vocoder.synthetic:write_sample_data",
    api={"VocoderPipeline": "mis.pipelines.vocoder.pipeline",
         "VocoderOutput": "mis.pipelines.vocoder.pipeline",
         "MelPipeline": "mis.pipelines.vocoder.mel",
         "read_audio": "mis.io.audio",
         "read_mel": "mis.io.audio",
         "write_wav": "mis.io.audio"},
)

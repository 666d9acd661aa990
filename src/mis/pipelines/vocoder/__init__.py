"""Neural vocoder (APNet): mel spectrogram -> amplitude and phase spectra -> inverse STFT."""

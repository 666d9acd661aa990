"""Early prediction of battery cycle life (FPNN + the Severson variance model)."""

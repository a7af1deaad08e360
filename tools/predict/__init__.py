"""Frame-22 prediction: the predict stage, the video predictor, first-stage loading, post-processing, output files."""

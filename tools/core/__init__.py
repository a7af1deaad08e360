"""Infrastructure every stage uses: configs, run folders, checkpoints, atomic writes, distributed, logging, errors, the stage registry."""

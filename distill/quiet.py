"""Only distill's own progress and messages reach the terminal.

The libraries under distill report in their own voice: datasets' "Saving the dataset" and "Map" bars,
transformers' "Loading weights" bar, accelerate's "[RANK 0] Removed shared tensor ... while saving"
(the tied embedding and output head, which save_pretrained stores once on purpose), and the
FutureWarnings and UserWarnings of torch, transformers, accelerate and datasets about their own
internals. `quiet_third_party` turns them off in one place, when `distill` is imported:

- environment variables, which the libraries read when they are imported and which child processes
  (`accelerate launch` workers, the service's job workers, Ray tasks) inherit; a value the user set
  is kept, so `HF_DATASETS_DISABLE_PROGRESS_BARS=0` brings datasets' bars back;
- the loggers' levels and the progress-bar switches of libraries already imported;
- warnings filters scoped to the third-party packages' own modules. A warning a library attributes
  to distill's code (stacklevel pointing at the caller) still shows: it is about our use of it.

Nothing here imports a heavy library: `distill --help` stays instant.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# Read at import by huggingface_hub, datasets, transformers and tokenizers (in this process and in every
# child process started from it).
QUIET_ENVIRONMENT = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # hub downloads, and transformers' bars, which follow the hub's switch
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # "Saving the dataset", "Map", "Filter"
    "TRANSFORMERS_VERBOSITY": "error",
    "DATASETS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",  # else tokenizers warns after a fork ("The current process just got forked")
}

# Their warnings about their own internals; matched against the module a warning is attributed to.
THIRD_PARTY = r"(torch|transformers|accelerate|datasets|huggingface_hub|safetensors|tokenizers|peft|torchvision)(\.|$)"
# Their loggers' info and warnings ("Removed shared tensor" is accelerate's). Not ACCELERATE_LOG_LEVEL: accelerate
# applies that to the root logger too, which would silence distill's own logs.
LOGGERS = ("transformers", "accelerate", "datasets", "huggingface_hub")


def quiet_third_party() -> None:
    """Silence third-party progress bars, info logs and internal warnings, here and in child processes."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    for category in (FutureWarning, UserWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=THIRD_PARTY)
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # Libraries imported before distill have read the environment already: tell them directly.
    if "datasets" in sys.modules and os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1":
        sys.modules["datasets"].disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
            transformers_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
        sys.modules["huggingface_hub"].utils.disable_progress_bars()

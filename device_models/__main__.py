"""``python -m device_models [DIRECTORY]``: regenerate the CRD files from the models."""

import sys
from pathlib import Path

from device_models.crd import CRD_DIRECTORY, write_crds

for written in write_crds(Path(sys.argv[1]) if len(sys.argv) > 1 else CRD_DIRECTORY):
    print(f"wrote {written}")

"""Entry point of ``python app ...`` (the MONAI Deploy app folder convention)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.app import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

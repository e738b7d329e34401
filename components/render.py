"""Write every generated configuration file of a stack, as it would be deployed.

    python -m components.render --stack dev --out build/dev

One folder per service. Secret values are replaced by marked placeholders, because the stack
file contains them encrypted.
"""

import argparse
import sys
from pathlib import Path

from components.config import stack_file_settings
from components.settings import ConfigError
from components.stack import describe


def render_stack(stack: str, out: Path) -> list[Path]:
    """Render the files of `Pulumi.<stack>.yaml` under `out` and return their paths."""
    settings = stack_file_settings(stack)

    written = []
    for service, files in describe(settings).items():
        for relative, content in files.items():
            path = out / service / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.render", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True, help="stack name, such as dev or prod (reads Pulumi.<stack>.yaml)")
    parser.add_argument("--out", required=True, type=Path, help="output directory; one folder per service is created")
    options = parser.parse_args(argv)

    try:
        written = render_stack(options.stack, options.out)
    except (ConfigError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

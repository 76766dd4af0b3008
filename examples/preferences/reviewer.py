"""A scripted reviewer for the preference example: it reads the first 300 records of the run, rejects the
stories in which characters fight, and edits the sad "it broke and could not be fixed" endings into a
mended toy. The rest of the records stay as the automatic review left them (kept, unread).

    python examples/preferences/reviewer.py RUN
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from distill.review.actions import decide, edit
from distill.review.store import build_view, trainable

READ = 300  # records the reviewer has time to read
FIGHT = re.compile(r"\bfight", re.IGNORECASE)
BROKEN = re.compile(r"(\w+) cried, and it could not be fixed\.")


def main(run: Path) -> None:
    read = [r for r in build_view(run) if r.id < READ and trainable(r)]
    fights = [r.id for r in read if FIGHT.search(r.text)]
    decide(run, fights, "reject", reviewer="scripted-reviewer", note="characters fight: not for ages 3-5")
    mended = [r for r in read if r.id not in fights and BROKEN.search(r.text)]
    for record in mended:
        edit(run, record.id, BROKEN.sub(r"\1 was sad, but Dad helped fix it.", record.text),
             reviewer="scripted-reviewer", note="a mended toy instead of a broken one")
    print(f"read {len(read)} records: rejected {len(fights)} with a fight, edited {len(mended)} sad endings",
          file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

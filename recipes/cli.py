"""What every recipe's command line shares: bad input is one line and exit code 2."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, Optional, Sequence


def guarded(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a recipe's ``main(argv)``: a user error prints ``error: ...`` on stderr and
    returns 2 (``--debug`` re-raises it with its traceback); Ctrl-C returns 130."""
    from tracer.execute import RemoteError
    from tracer.models import ModelLoadError

    user_errors = (ValueError, IndexError, TypeError, KeyError, OSError, ModelLoadError, RemoteError)

    @functools.wraps(main)
    def run(argv: Optional[Sequence[str]] = None, **kwargs: Any) -> int:
        argv = list(sys.argv[1:] if argv is None else argv)
        debug = "--debug" in argv
        argv = [a for a in argv if a != "--debug"]
        try:
            return main(argv, **kwargs)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except user_errors as error:
            if debug:
                raise
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            print(f"error: {message} (--debug shows the traceback)", file=sys.stderr)
            return 2

    return run

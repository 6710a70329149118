"""The values the ``deltavae`` command line takes (numbers, seeds, archetype counts) and the
options of its spatial models, for :mod:`deltavae.cli`'s parser. Imports no model, so that
parsing answers at once."""

from __future__ import annotations

import argparse

from deltavae._close_names import did_you_mean

#: Archetypes' defaults, shown in ``deltavae fit --help`` (tests/test_cli_spatial.py checks
#: them against :class:`deltavae.model.Archetypes`' own).
MERGE_THRESHOLD = 0.9
MAX_ARCHETYPES = 10
MIN_SPOTS = 5
#: CGMDVAE's default classifier_weight, shown in ``deltavae fit --help``.
CLASSIFIER_WEIGHT = 50.0
#: The likelihoods ``--likelihood`` takes (tests/test_cli.py checks them against
#: :data:`deltavae.distributions.LIKELIHOODS`, which parsing does not import).
LIKELIHOODS = ("zinb", "nb", "normal", "bernoulli")
#: ``deltavae fit --early-stopping``'s defaults, each model's ``train(early_stopping=...)``
#: (tests/test_fit_help.py checks them against the models' own; CGMDVAE's "auto" is on where
#: cells are held out, with its patience of ``train._stopping.AUTO_PATIENCE`` validations).
EARLY_STOPPING_DEFAULTS = (
    "[the model's default: on for cgmdvae where cells are held out (--train-size below 1), "
    "after 75 validations without improvement; off for zinbvae, nmfdeconv, archetypes and "
    "imputer]"
)


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line on stderr (exit status 2), as the
    command's other errors of bad input are: argparse printed its usage block, about twenty
    lines for ``fit``, before the line that says what was wrong."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        """argparse's, with the flags closest to each unknown one (``--label-key``: did you
        mean '--labels-key'?), refused by the command's own parser (its ``--help``)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = self._command_parser(parsed)
            flags = [flag for action in parser._actions for flag in action.option_strings]
            hints = [did_you_mean(word.split("=")[0], flags) for word in extras]
            hints = [
                hint for word, hint in zip(extras, hints, strict=True) if word[:1] == "-" and hint
            ]
            said = f" ({'; '.join(dict.fromkeys(hints))})" if hints else ""
            parser.error(f"unrecognized arguments: {' '.join(extras)}{said}")
        return parsed

    def _check_value(self, action: argparse.Action, value) -> None:
        """argparse's refusal of a value outside a flag's (or the command's) choices, with
        the closest ones (``--model zinvae``: did you mean 'zinbvae'?), as a misspelt flag
        gets them."""
        if action.choices is not None and value not in action.choices:
            hint = did_you_mean(value, action.choices) or did_you_mean(
                str(value).lower(), action.choices
            )
            known = ", ".join(map(repr, action.choices))
            raise argparse.ArgumentError(
                action,
                f"invalid choice: {value!r}{'; ' + hint if hint else ''} (choose from {known})",
            )

    def _command_parser(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        """The parser of the command ``parsed`` names (``fit``'s), else this one."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices.get(getattr(parsed, action.dest, None), self)
        return self


def path_arg(text: str) -> str:
    """A file or folder path: not empty (an unset shell variable, ``--out "$OUT"``, gave
    ``''``, read as the current folder).

    Examples
    --------
    >>> path_arg("counts.h5ad")
    'counts.h5ad'
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a path, got an empty string")
    return text


def positive_int(text: str) -> int:
    """``text`` as an integer of at least 1; else a usage error.

    Examples
    --------
    >>> positive_int("3")
    3
    """
    return _int_at_least(text, 1, "a positive integer")


def _int_at_least(text: str, low: int, what: str) -> int:
    """``text`` as an integer of at least ``low``; else a usage error saying ``what``."""
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def _float_within(text: str, high: float, what: str) -> float:
    """``text`` as a number above 0 and at most ``high``; else a usage error saying ``what``."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= high or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def positive_float(text: str) -> float:
    """``text`` as a finite number above 0; else a usage error."""
    return _float_within(text, float("inf"), "a positive number")


def condition_alignment_arg(text: str) -> float | str:
    """``text`` as CGMDVAE's ``condition_alignment``: ``auto`` or a number of 0 or more.

    Examples
    --------
    >>> condition_alignment_arg("auto"), condition_alignment_arg("10")
    ('auto', 10.0)
    """
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return non_negative_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be 'auto' or a number of 0 or more, got {text}"
        ) from None


def non_negative_float(text: str) -> float:
    """``text`` as a finite number of 0 or more; else a usage error.

    Examples
    --------
    >>> non_negative_float("0"), non_negative_float("12.5")
    (0.0, 12.5)
    """
    try:
        if float(text) == 0:
            return 0.0
    except ValueError:
        pass  # refused below
    return _float_within(text, float("inf"), "a number of 0 or more")


def fraction(text: str) -> float:
    """``text`` as a number in (0, 1]; else a usage error.

    Examples
    --------
    >>> fraction("0.8")
    0.8
    """
    return _float_within(text, 1.0, "a fraction in (0, 1]")


def seed_arg(text: str) -> int:
    """A seed numpy and torch both take: an integer in [0, 2**32)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: not an integer") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: must lie in [0, 2**32)")
    return value


def n_archetypes_arg(text: str) -> int | str:
    """``--n-archetypes``: ``auto`` or an integer of at least 2.

    Examples
    --------
    >>> n_archetypes_arg("auto"), n_archetypes_arg("4")
    ('auto', 4)
    """
    if text == "auto":
        return text
    return _int_at_least(text, 2, "'auto' or an integer >= 2")


def max_archetypes_arg(text: str) -> int:
    """``--max-archetypes``: an integer of at least 3 (``auto`` compares 2 or more).

    Examples
    --------
    >>> max_archetypes_arg("12")
    12
    """
    return _int_at_least(text, 3, "an integer >= 3")


def n_markers_arg(text: str) -> int | str:
    """``--n-markers``: a positive integer, or ``all`` (every shared gene, ``n_markers=None``).

    Examples
    --------
    >>> n_markers_arg("20"), n_markers_arg("all")
    (20, 'all')
    """
    if text == "all":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer or 'all', got {text}"
        ) from None


def add_early_stopping(
    parser: argparse.ArgumentParser,
    note: str = "",
    loss: str = "loss (the ELBO, plus CGMDVAE's classifier and alignment terms)",
    warmup: str = " after the KL warm-up",
    default: str = "",
) -> None:
    """``--early-stopping`` and ``--no-early-stopping`` (``None`` where neither is given: the
    model's own default, which for CGMDVAE is on and only the second turns off)."""
    parser.add_argument(
        "--early-stopping",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=(
            f"stop when the validation {loss} stops improving{warmup}{note}, "
            "and keep the parameters of its best epoch, not the last epoch's; "
            f"--no-early-stopping trains all --epochs {default}"
        ),
    )


def add_spatial_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``deltavae fit``'s spatial models (archetypes, nmfdeconv, imputer)."""
    parser.add_argument(
        "--n-archetypes",
        type=n_archetypes_arg,
        default=None,
        help="archetypes, an integer >= 2 or 'auto': the elbow of the explained variance over "
        "2 to --max-archetypes (archetypes) [model's default: auto]",
    )
    parser.add_argument(
        "--max-archetypes",
        type=max_archetypes_arg,
        default=None,
        help=f"archetypes: most archetypes --n-archetypes auto tries [{MAX_ARCHETYPES}]",
    )
    parser.add_argument(
        "--merge-threshold",
        type=fraction,
        default=None,
        help="archetypes: cosine similarity above which archetypes merge after training, in "
        f"(0, 1]; 1 never merges [{MERGE_THRESHOLD}]",
    )
    parser.add_argument(
        "--min-spots",
        type=positive_int,
        default=None,
        help=f"archetypes: fewest spots an archetype must lead in to stand on its own "
        f"[{MIN_SPOTS}]",
    )
    parser.add_argument(
        "--n-markers",
        type=n_markers_arg,
        default=None,
        help="nmfdeconv: top marker genes per cell type the model reads, or 'all' shared "
        "genes [50]",
    )
    parser.add_argument(
        "--profiles",
        choices=("neighbours", "type"),
        default=None,
        help=(
            "imputer: each spot's state profiles from its nearest reference cells, or one "
            "profile per cell type (for spots of many cells, e.g. Visium) [neighbours]"
        ),
    )
    parser.add_argument(
        "--design",
        choices=("deconvolution", "latent"),
        default=None,
        help=(
            "imputer: spots as mixtures of reference states, or a latent space shared with "
            "the reference cells [deconvolution]"
        ),
    )

"""Run files: ``minis2s train --config run.toml``, whose keys are train's flags without the dashes.

    # run.toml
    data = "eng-fra"
    cell = "lstm"
    hidden-size = 512
    bidirectional = true
    time-limit = "20m"

Flags given on the command line override the file. Every trained model folder gets the fully resolved
run as ``DIR/config.toml`` (every flag, defaults included), so ``minis2s train --config DIR/config.toml
--out OTHER`` runs it again. A key that is not a flag, a value of the wrong type or outside the flag's
choices, and a file that cannot be read or parsed are errors that name the file and the key.
"""
import argparse
import difflib
import json
import os
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:                                                    # Python 3.10: the same parser, as a package
    import tomli as tomllib

SKIP = ("help", "config", "run")                          # flags that are not part of a run


class ConfigError(ValueError):
    """A bad run file: the message names the file and the key."""


def _actions(parser):
    """{key: argparse action} for every flag of ``parser``, keyed as in the file (kebab case)."""
    return {action.option_strings[-1].lstrip("-"): action for action in parser._actions
            if action.option_strings and action.dest not in SKIP}


def _check(path, key, value, action):
    """The value as the flag would hold it, or a ConfigError naming the file and the key."""
    def wrong(expected):
        return ConfigError(f"{path}: key '{key}': expected {expected}, got {value!r} ({type(value).__name__})")
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value if isinstance(action, argparse._StoreTrueAction) else not value
    kind = {int: "an integer", float: "a number", None: "a string"}.get(action.type,
                                                                       getattr(action.type, "expects", None))
    if isinstance(value, (bool, list, dict)):
        raise wrong(kind or "a number or a string")
    if kind == "a string" and not isinstance(value, str):
        raise wrong("a string")
    if kind == "an integer" and not isinstance(value, int):
        raise wrong("an integer")
    if kind == "a number" and not isinstance(value, (int, float)):
        raise wrong("a number")
    try:
        converted = action.type(str(value)) if action.type is not None else value
    except (argparse.ArgumentTypeError, ValueError) as error:
        raise ConfigError(f"{path}: key '{key}': {error}") from None
    if action.choices is not None and converted not in action.choices:
        raise ConfigError(f"{path}: key '{key}': {value!r} is not one of {', '.join(map(str, action.choices))}")
    return converted


def read(path, parser):
    """{dest: value} from the run file at ``path``, checked against ``parser``'s flags."""
    try:
        with open(path, "rb") as stream:
            table = tomllib.load(stream)
    except OSError as error:
        raise ConfigError(f"--config {path}: cannot read it ({error.strerror or error})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    actions = _actions(parser)
    values = {}
    for key, value in table.items():
        action = actions.get(key) or actions.get(key.replace("_", "-"))
        if action is None:
            close = difflib.get_close_matches(key, list(actions), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (the keys are train's flags: {', '.join(actions)})"
            raise ConfigError(f"{path}: unknown key '{key}'{hint}")
        values[action.dest] = _check(path, key, value, action)
    return values


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)      # a TOML basic string: JSON's escapes are TOML's


def write(path, args, parser):
    """The fully resolved run (every flag of ``parser`` with its value in ``args``) as TOML, atomically."""
    lines = ["# the resolved run: minis2s train --config THIS_FILE --out DIR runs it again\n"]
    for key, action in _actions(parser).items():
        value = getattr(args, action.dest, None)
        if value is None or action.dest == "resume":
            continue                                        # TOML has no null: an unset flag keeps its default
        if isinstance(action, argparse._StoreFalseAction):
            value = not value
        lines.append(f"{key} = {_toml_value(value)}\n")
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as stream:
        stream.writelines(lines)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)

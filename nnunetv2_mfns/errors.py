"""User-facing errors: raised for bad input, printed by the console scripts as one line."""


class MfnsInputError(ValueError):
    """Bad user input (file, parameter, dataset). The message names the file or parameter and the problem."""


def read_json_file(path, missing_hint: str = "", invalid_hint: str = ""):
    """Loads a JSON file the user pointed us at; a missing or broken file is an MfnsInputError naming it,
    followed by `missing_hint` or `invalid_hint` (what to do about it) when given."""
    import json
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        raise MfnsInputError(f"{path}: is a directory, expected a JSON file")
    if not path.is_file():
        raise MfnsInputError(f"{path}: not found{'; ' + missing_hint if missing_hint else ''}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MfnsInputError(f"{path}: not valid JSON ({e}){'; ' + invalid_hint if invalid_hint else ''}") from None


def output_folder_problem(path) -> str | None:
    """Why `path` cannot be (or become) an output folder: it is an existing file, or a file stands where one
    of its parent folders would be created (mkdir would fail with a traceback). None when it is usable."""
    from pathlib import Path

    path = Path(path)
    if path.exists() and not path.is_dir():
        return "output path exists and is not a folder"
    blocker = next((p for p in path.parents if p.exists()), None)
    if not path.exists() and blocker is not None and not blocker.is_dir():
        return f"output folder cannot be created: {blocker} is a file"
    return None

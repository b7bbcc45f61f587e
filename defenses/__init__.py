"""Built-in defenses: registry name -> ``"module:Class"`` (imported on first use)."""

BUILTIN: dict[str, str] = {
    "none": "defenses.none:NoDefense",
}

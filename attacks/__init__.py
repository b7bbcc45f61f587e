"""Built-in attacks: registry name -> ``"module:Class"`` (imported on first use)."""

BUILTIN: dict[str, str] = {
    "badnet": "attacks.badnet:BadNet",
}

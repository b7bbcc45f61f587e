"""Built-in attacks: registry name -> ``"module:Class"`` (imported on first use)."""

BUILTIN: dict[str, str] = {
    "badnet": "attacks.badnet:BadNet",
    "blended": "attacks.blended:Blended",
    "label_consistent": "attacks.label_consistent:LabelConsistent",
    "wanet": "attacks.wanet:WaNet",
}

"""Built-in attacks: registry name -> ``"module:Class"`` (imported on first use)."""

BUILTIN: dict[str, str] = {
    "badclip": "attacks.badclip:BadCLIP",
    "badclip_eot": "attacks.badclip_eot:BadCLIPEOT",
    "badnet": "attacks.badnet:BadNet",
    "blended": "attacks.blended:Blended",
    "label_consistent": "attacks.label_consistent:LabelConsistent",
    "sig": "attacks.sig:SIG",
    "wanet": "attacks.wanet:WaNet",
}

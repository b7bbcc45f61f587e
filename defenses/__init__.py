"""Built-in defenses: registry name -> ``"module:Class"`` (imported on first use)."""

BUILTIN: dict[str, str] = {
    "none": "defenses.none:NoDefense",
    "finetune": "defenses.finetune:Finetune",
    "finetune_aug": "defenses.finetune_aug:FinetuneAug",
    "cleanclip": "defenses.cleanclip:CleanCLIP",
    "roclip": "defenses.roclip:RoCLIP",
    "detect_and_retrain": "defenses.detect_and_retrain:DetectAndRetrain",
    "ta_cleaner": "defenses.ta_cleaner:TACleaner",
}

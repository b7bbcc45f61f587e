"""Built-in detectors: registry name -> ``"module:Class"`` (imported on first use).

Sample detectors score every pair of the poisoned training set (which pairs are poisoned?);
model detectors score an encoder (is it backdoored?). One method per module.
"""

BUILTIN: dict[str, str] = {
    "k_distance": "defenses.detectors.k_distance:KDistance",
    "lid": "defenses.detectors.lid:LID",
    "dao": "defenses.detectors.dao:DAO",
    "isolation_forest": "defenses.detectors.isolation_forest:IsolationForestDetector",
    "abl_loss": "defenses.detectors.abl_loss:ABLLoss",
    "decree": "defenses.detectors.decree:DECREE",
}

"""The device checks: target detection, `doctor`, memory, the on-device bench."""

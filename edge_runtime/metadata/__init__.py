"""What a .tflite says about itself: edgeship's block (`block`), the standard TFLite Model
Metadata (`standard`, `standard_write`, the flatc-generated `schema`), class names (`labels`,
`labeling`) and what its graph's output is (`graph`)."""

"""The README.txt that `edgeship deploy mobile` writes beside the phone-ready models."""

from __future__ import annotations

from typing import Any


def readme_text(meta: dict[str, Any], names: list[str]) -> str:
    """How to load the phone-ready models in MediaPipe Tasks, Android Studio and LiteRT."""
    block = meta.get("input") or {}
    height, width = (int(d) for d in block.get("shape", [0, 0])[:2])
    classes = meta.get("class_names") or []
    shown = ", ".join(str(c) for c in classes[:10]) + (", ..." if len(classes) > 10 else "")
    first = names[0] if names else "model_int8.tflite"
    stem = first.removesuffix(".tflite")
    files = "\n".join(f"  {n}" for n in names)
    return f"""Phone-ready image classifiers written by `edgeship deploy mobile`
=================================================================

Files:
{files}

Input:  one RGB image, {height} high x {width} wide x 3 channels, pixels 0-255
        (uint8 for model_int8.tflite, float32 for the others; the float models' metadata
        says mean 0, std 1, so MediaPipe passes pixels unchanged).
        The graph does the rest of edgeship's preprocessing itself (grayscale, inverting a
        light-background photo for a dark-background model, the pixel scaling). Your app
        only resizes the photo to {width}x{height} (MediaPipe does that for you).
Output: {len(classes)} class probabilities, named in the model ({shown}).

Every file carries the standard TFLite Model Metadata (name, version, input normalization,
colour space, the labels file packed in as a zip), which MediaPipe Tasks, Android Studio
and the LiteRT Task Library read, and edgeship's own block, which edge_runtime reads.

MediaPipe Tasks (one C++ ImageClassifier behind every platform)
---------------------------------------------------------------
Python (pip install mediapipe):

    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path="{first}"), max_results=3)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        result = classifier.classify(mp.Image.create_from_file("photo.jpg"))
        top = result.classifications[0].categories[0]
        print(top.category_name, top.score)

Android (Kotlin, com.google.mediapipe:tasks-vision): put the file in app/src/main/assets/,
then

    val options = ImageClassifier.ImageClassifierOptions.builder()
        .setBaseOptions(BaseOptions.builder().setModelAssetPath("{first}").build())
        .setMaxResults(3).build()
    val classifier = ImageClassifier.createFromOptions(context, options)
    val result = classifier.classify(BitmapImageBuilder(bitmap).build())

iOS (Swift, pod 'MediaPipeTasksVision'): add the file to the app bundle, then

    let path = Bundle.main.path(forResource: "{stem}", ofType: "tflite")!
    let options = ImageClassifierOptions()
    options.baseOptions.modelAssetPath = path
    options.maxResults = 3
    let classifier = try ImageClassifier(options: options)
    let result = try classifier.classify(image: MPImage(uiImage: image))

Web (npm @mediapipe/tasks-vision):

    const vision = await FilesetResolver.forVisionTasks("<path to tasks-vision>/wasm");
    const classifier = await ImageClassifier.createFromOptions(vision, {{
      baseOptions: {{ modelAssetPath: "{first}" }}, maxResults: 3 }});
    const result = classifier.classify(imageElement);

Android Studio model binding
----------------------------
File > New > Other > TensorFlow Lite Model, pick {first}: Android Studio reads the
metadata and generates a class with typed input (TensorImage) and labelled output
(List<Category>).

Plain LiteRT / TensorFlow Lite
------------------------------
Any interpreter runs the files as they are: feed a (1, {height}, {width}, 3) tensor of
pixels; the packed zip at the end of the file is ignored by the interpreter. On a
Raspberry Pi, `python -m edge_runtime predict {first} photo.jpg` names the class too.
"""

"""Phone-ready models (`edgeship deploy mobile`): RGB in, preprocessing in the graph, standard
metadata with the labels packed in."""

from edgeship.deploy.mobile.models import MobileError, write_mobile_models

__all__ = ["MobileError", "write_mobile_models"]

"""The file MLflow runs to build the served model (MLflow's "models from code").

Logging the model this way stores no pickled Python object in it: MLflow keeps this source
file and the weights (read with ``torch.load(weights_only=True)``), so loading a model from a
shared store never unpickles code.
"""

import mlflow

from hmsa.mlops.serving import SegmenterPyfunc

mlflow.models.set_model(SegmenterPyfunc())

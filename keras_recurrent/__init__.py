"""keras_recurrent: SimpleRNN, peephole LSTM and GRU layers for Keras 3.

Every public class is registered for ``.keras`` saving under the package name
``keras_recurrent``, so ``keras.models.load_model`` finds it once this package
is imported.
"""

import keras

from keras_recurrent import data, diagnostics, interop
from keras_recurrent._exporting import exporting
from keras_recurrent.gru import GRU, GRUCell
from keras_recurrent.lstm import LSTM, LSTMCell
from keras_recurrent.simple_rnn import SimpleRNN, SimpleRNNCell

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "GRUCell",
    "LSTM",
    "LSTMCell",
    "SimpleRNN",
    "SimpleRNNCell",
    "data",
    "diagnostics",
    "exporting",
    "interop",
]

for _cls in (GRU, GRUCell, LSTM, LSTMCell, SimpleRNN, SimpleRNNCell):
    keras.saving.register_keras_serializable(package="keras_recurrent")(_cls)
del _cls

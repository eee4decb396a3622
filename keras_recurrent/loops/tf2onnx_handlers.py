"""TensorFlow only: the tf2onnx handlers for what the TensorFlow loops trace.

tf2onnx converts a TensorFlow graph operation by operation, by handlers it
looks up by operation type. :func:`register` adds three:

- ``PartitionedCall`` and ``StatefulPartitionedCall``: TensorFlow never
  inlines the call of a function compiled by XLA, such as the XLA loop's
  (``keras_recurrent.loops.tensorflow``, which registers the handlers when
  it is first used), and ONNX has no call. The handler inlines the body
  that tf2onnx has converted already, as TensorFlow does with any other
  call: a plain ``model.export(format="onnx")`` gives an ONNX ``Loop`` per
  layer. The call of a SimpleRNN function that ``keras_recurrent.loops.graph``
  names for its equations (:func:`rnn_function_name`) becomes ONNX's
  ``RNN`` instead;
- ``BlockLSTMV2``, made by ``keras_recurrent.loops.graph`` under
  :data:`BLOCK_SCOPE` for a peephole LSTM: ONNX's ``LSTM`` with its ``P``
  input. Any other ``BlockLSTMV2`` is refused.
"""

#: The name scope of the BlockLSTMV2 operations that
#: ``keras_recurrent.loops.graph`` makes and the handler converts (it refuses
#: any other BlockLSTMV2).
BLOCK_SCOPE = "keras_recurrent_peephole_lstm"

#: ONNX's activation of each SimpleRNN function, by FusedKernel name.
RNN_ACTIVATIONS = {"rnn_tanh": "Tanh", "rnn_relu": "Relu"}


def rnn_function_name(kernel):
    """The name of the SimpleRNN function for the FusedKernel ``kernel``,
    whose call the handler converts to ONNX's ``RNN``."""
    return f"keras_recurrent_{kernel}"


_handlers_registered = []


def register():
    """Registers the handlers, once; False when tf2onnx is not installed."""
    if _handlers_registered:
        return True
    try:
        import numpy as np
        from tf2onnx import utils
        from tf2onnx.graph_builder import GraphBuilder
        from tf2onnx.handler import tf_op
        from tf2onnx.onnx_opset.controlflow import inline_subgraph, parameter_binding
        from tf2onnx.tf_loader import find_function
    except ImportError:
        return False

    def onnx_gates(blocks):
        """Keras's gate order i, f, c, o to ONNX's i, o, f, c."""
        i, f, c, o = np.split(blocks, 4, axis=0)
        return np.concatenate([i, o, f, c], axis=0)

    def constants(ctx, node, named):
        """The ONNX constants ``{part: value}``, named after ``node``."""
        return [
            ctx.make_const(utils.make_name(f"{node.name}_{part}"), value).output[0]
            for part, value in named.items()
        ]

    @tf_op("BlockLSTMV2")
    class BlockLSTMV2:
        @classmethod
        def version_7(cls, ctx, node, **kwargs):
            utils.make_sure(
                BLOCK_SCOPE in node.name,
                "BlockLSTMV2 is converted only as keras_recurrent makes it",
            )
            _, x, c0, h0, w, wci, wcf, wco, b = node.input
            values = {}
            for name in (w, wci, wcf, wco, b):
                utils.make_sure(
                    ctx.is_const(name), "BlockLSTMV2 needs constant weights"
                )
                values[name] = ctx.get_tensor_value(name, as_list=False)
            units = values[wci].shape[0]
            features = values[w].shape[0] - units
            kernel = onnx_gates(values[w][:features].T)[None]
            recurrent = onnx_gates(values[w][features:].T)[None]
            bias = np.concatenate([onnx_gates(values[b]), np.zeros_like(values[b])])
            peepholes = np.concatenate([values[wci], values[wco], values[wcf]])
            # Only h (output 6) and the last step of cs (output 1) are read.
            for unread in (0, 2, 3, 4, 5):
                utils.make_sure(
                    not ctx.find_output_consumers(node.output[unread]),
                    "BlockLSTMV2's gates have no ONNX counterpart",
                )
            h_output, c_output = node.output[6], node.output[1]
            builder = GraphBuilder(ctx)
            initial = [
                builder.make_unsqueeze({"data": state, "axes": [0]})
                for state in (h0, c0)
            ]
            W, R, B, P = constants(
                ctx,
                node,
                {"W": kernel, "R": recurrent, "B": bias[None], "P": peepholes[None]},
            )
            ctx.remove_node(node.name)
            lstm = ctx.make_node(
                "LSTM",
                [x, W, R, B, "", *initial, P],
                attr={"hidden_size": units, "direction": "forward"},
                output_count=3,
            )
            builder.make_squeeze(
                {"data": lstm.output[0], "axes": [1], "outputs": [h_output]}
            )
            # ONNX gives the last cell state alone: a one-step "sequence",
            # whose last step is what the graph reads.
            ctx.make_node("Identity", [lstm.output[2]], outputs=[c_output])

    activations = {
        rnn_function_name(name): onnx for name, onnx in RNN_ACTIVATIONS.items()
    }

    @tf_op(["PartitionedCall", "StatefulPartitionedCall"])
    class Call:
        @classmethod
        def version_7(cls, ctx, node, **kwargs):
            function = node.get_attr_str("f")
            names = [name for name in activations if name in function]
            if not names:
                cls.inline(ctx, node, function)
                return
            x, kernel, recurrent, bias, h0 = node.input
            values = {}
            for name in (kernel, recurrent, bias):
                utils.make_sure(
                    ctx.is_const(name), "the SimpleRNN needs constant weights"
                )
                values[name] = ctx.get_tensor_value(name, as_list=False)
            units = values[bias].shape[0]
            W, R, B = constants(
                ctx,
                node,
                {
                    "W": values[kernel].T[None],
                    "R": values[recurrent].T[None],
                    "B": np.concatenate([values[bias], np.zeros_like(values[bias])])[
                        None
                    ],
                },
            )
            hs_output, h_output = node.output
            builder = GraphBuilder(ctx)
            initial = builder.make_unsqueeze({"data": h0, "axes": [0]})
            ctx.remove_node(node.name)
            rnn = ctx.make_node(
                "RNN",
                [x, W, R, B, "", initial],
                attr={
                    "hidden_size": units,
                    "direction": "forward",
                    "activations": [activations[names[0]]],
                },
                output_count=2,
            )
            builder.make_squeeze(
                {"data": rnn.output[0], "axes": [1], "outputs": [hs_output]}
            )
            builder.make_squeeze(
                {"data": rnn.output[1], "axes": [0], "outputs": [h_output]}
            )

        @staticmethod
        def inline(ctx, node, function):
            """The call replaced by the function's body, converted already
            (tf2onnx converts every function of the graph before the graph):
            what TensorFlow does itself with a call it may inline."""
            body = find_function(function)
            utils.make_sure(body is not None, "no function %s to inline", function)
            binding = parameter_binding(body, node.input)
            outputs = inline_subgraph(ctx, body, node.name, binding)
            names = list(node.output)
            ctx.remove_node(node.name)
            for name, output in zip(names, outputs):
                ctx.make_node("Identity", [output], outputs=[name])

    _handlers_registered.extend([BlockLSTMV2, Call])
    return True

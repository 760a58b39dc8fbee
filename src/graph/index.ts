export { type DType, DTYPE_SIZE, isFloat, halfToFloat, floatToHalf, floatToBf16, writeAsF32 } from './dtypes.js';
export {
  Graph, GraphError, Tensor, formatShape,
  type Attrs, type AttrValue, type Dim, type GraphOutput, type InitializerData, type Node, type Shape, type TensorSource,
} from './ir.js';
export { OPS, type OpDef, type TensorType } from './ops.js';
export { GraphBuilder, END, type TensorLike } from './builder.js';
export { toOnnxBytes, toOnnxModel, writeOnnxWithExternalData, literalBytes, ONNX_DTYPE, type LowerOptions } from './onnx.js';
export { gradients, reduceToShape, DIFFERENTIABLE_OPS, type GradientSeed } from './autodiff.js';

//! Hand-written `prost` messages for the subset of `onnx.proto` this crate writes.
//!
//! Field numbers, types and labels follow `onnx/onnx.proto` (the proto2 file that ONNX
//! Runtime compiles; checked against onnx 1.23). Optional scalars are `Option<T>` so that
//! proto2 presence survives: an attribute `axis = 0` must still be *encoded*, because ONNX
//! Runtime looks attributes up with `has_i()`/`has_f()` and a proto3-style "default value
//! is not written" encoding would make `Softmax(axis=0)` fail to load. Repeated scalars
//! that onnx.proto does not declare `[packed = true]` are written unpacked, as `protoc`
//! would write them (parsers accept either form).
//!
//! Fields this crate never writes (sparse tensors, functions, training info, lists of
//! sub-graphs in attributes, ...) are left out; decoding a model that has them skips them as unknown
//! fields.

use prost::Message;

/// `TensorProto.DataType`: element types of tensors (the subset this crate uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DataType {
    Undefined = 0,
    Float = 1,
    Uint8 = 2,
    Int8 = 3,
    Int32 = 6,
    Int64 = 7,
    String = 8,
    Bool = 9,
    Float16 = 10,
    Double = 11,
    Bfloat16 = 16,
}

impl DataType {
    /// Size of one element in bytes (0 for `Undefined` and `String`).
    pub fn size_of(self) -> usize {
        match self {
            DataType::Undefined | DataType::String => 0,
            DataType::Uint8 | DataType::Int8 | DataType::Bool => 1,
            DataType::Float16 | DataType::Bfloat16 => 2,
            DataType::Float | DataType::Int32 => 4,
            DataType::Int64 | DataType::Double => 8,
        }
    }

    /// Short lowercase name (`f32`, `i64`, ...), used in generated constant names.
    pub fn short_name(self) -> &'static str {
        match self {
            DataType::Undefined => "undefined",
            DataType::Float => "f32",
            DataType::Uint8 => "u8",
            DataType::Int8 => "i8",
            DataType::Int32 => "i32",
            DataType::Int64 => "i64",
            DataType::String => "string",
            DataType::Bool => "bool",
            DataType::Float16 => "f16",
            DataType::Double => "f64",
            DataType::Bfloat16 => "bf16",
        }
    }
}

/// `ModelProto`: the top-level ONNX file.
#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(int64, optional, tag = "1")]
    pub ir_version: Option<i64>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(string, optional, tag = "2")]
    pub producer_name: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub producer_version: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub domain: Option<String>,
    #[prost(int64, optional, tag = "5")]
    pub model_version: Option<i64>,
    #[prost(string, optional, tag = "6")]
    pub doc_string: Option<String>,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// `StringStringEntryProto`: a key/value string pair (metadata, external-data locations).
#[derive(Clone, PartialEq, Eq, Hash, Message)]
pub struct StringStringEntryProto {
    #[prost(string, optional, tag = "1")]
    pub key: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

impl StringStringEntryProto {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: Some(key.into()),
            value: Some(value.into()),
        }
    }
}

/// `OperatorSetIdProto`: an opset import; `domain` empty (or absent) is the default
/// `ai.onnx` domain.
#[derive(Clone, PartialEq, Eq, Hash, Message)]
pub struct OperatorSetIdProto {
    #[prost(string, optional, tag = "1")]
    pub domain: Option<String>,
    #[prost(int64, optional, tag = "2")]
    pub version: Option<i64>,
}

/// `GraphProto`: nodes in topological order plus the graph's inputs, outputs and weights.
#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(string, optional, tag = "10")]
    pub doc_string: Option<String>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "16")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// `NodeProto`: one operator call. An empty input name marks an omitted optional input.
#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, optional, tag = "3")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub op_type: Option<String>,
    #[prost(string, optional, tag = "7")]
    pub domain: Option<String>,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    #[prost(string, optional, tag = "6")]
    pub doc_string: Option<String>,
}

/// Nested types of [`AttributeProto`].
pub mod attribute_proto {
    /// `AttributeProto.AttributeType`: which value field of the attribute is set.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum AttributeType {
        Undefined = 0,
        Float = 1,
        Int = 2,
        String = 3,
        Tensor = 4,
        Graph = 5,
        Floats = 6,
        Ints = 7,
        Strings = 8,
        Tensors = 9,
        Graphs = 10,
        SparseTensor = 11,
        SparseTensors = 12,
        TypeProto = 13,
        TypeProtos = 14,
    }
}
pub use attribute_proto::AttributeType;

/// `AttributeProto`: a named, typed attribute of a node.
#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "13")]
    pub doc_string: Option<String>,
    #[prost(enumeration = "AttributeType", optional, tag = "20")]
    pub r#type: Option<i32>,
    #[prost(float, optional, tag = "2")]
    pub f: Option<f32>,
    #[prost(int64, optional, tag = "3")]
    pub i: Option<i64>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub s: Option<Vec<u8>>,
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    #[prost(float, repeated, packed = "false", tag = "7")]
    pub floats: Vec<f32>,
    #[prost(int64, repeated, packed = "false", tag = "8")]
    pub ints: Vec<i64>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "10")]
    pub tensors: Vec<TensorProto>,
    /// A `GRAPH` attribute's sub-graph (the branches of `If`).
    #[prost(message, optional, boxed, tag = "6")]
    pub g: Option<Box<GraphProto>>,
}

impl AttributeProto {
    fn named(name: &str, ty: AttributeType) -> Self {
        Self {
            name: Some(name.to_owned()),
            r#type: Some(ty as i32),
            ..Default::default()
        }
    }

    /// An `INT` attribute.
    pub fn int(name: &str, value: i64) -> Self {
        Self {
            i: Some(value),
            ..Self::named(name, AttributeType::Int)
        }
    }

    /// A `FLOAT` attribute.
    pub fn float(name: &str, value: f32) -> Self {
        Self {
            f: Some(value),
            ..Self::named(name, AttributeType::Float)
        }
    }

    /// A `STRING` attribute (UTF-8 bytes).
    pub fn string(name: &str, value: &str) -> Self {
        Self {
            s: Some(value.as_bytes().to_vec()),
            ..Self::named(name, AttributeType::String)
        }
    }

    /// An `INTS` attribute.
    pub fn ints(name: &str, values: &[i64]) -> Self {
        Self {
            ints: values.to_vec(),
            ..Self::named(name, AttributeType::Ints)
        }
    }

    /// A `FLOATS` attribute.
    pub fn floats(name: &str, values: &[f32]) -> Self {
        Self {
            floats: values.to_vec(),
            ..Self::named(name, AttributeType::Floats)
        }
    }

    /// A `STRINGS` attribute.
    pub fn strings(name: &str, values: &[&str]) -> Self {
        Self {
            strings: values.iter().map(|s| s.as_bytes().to_vec()).collect(),
            ..Self::named(name, AttributeType::Strings)
        }
    }

    /// A `TENSOR` attribute (e.g. the `value` of a `Constant` node).
    pub fn tensor(name: &str, value: TensorProto) -> Self {
        Self {
            t: Some(value),
            ..Self::named(name, AttributeType::Tensor)
        }
    }

    /// A `GRAPH` attribute (e.g. a branch of `If`).
    pub fn graph(name: &str, value: GraphProto) -> Self {
        Self {
            g: Some(Box::new(value)),
            ..Self::named(name, AttributeType::Graph)
        }
    }
}

/// Every node of `graph` and of the sub-graphs in their attributes (the branches of `If`),
/// depth first: a node's sub-graphs' nodes come right after it.
pub fn all_nodes(graph: &GraphProto) -> Vec<&NodeProto> {
    fn walk<'a>(nodes: &'a [NodeProto], out: &mut Vec<&'a NodeProto>) {
        for node in nodes {
            out.push(node);
            for sub in node.attribute.iter().filter_map(|a| a.g.as_deref()) {
                walk(&sub.node, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&graph.node, &mut out);
    out
}

/// Nested types of [`TensorProto`].
pub mod tensor_proto {
    /// `TensorProto.DataLocation`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum DataLocation {
        Default = 0,
        External = 1,
    }
}
pub use tensor_proto::DataLocation;

/// `TensorProto`: a constant tensor (initializer or attribute value).
///
/// This crate writes data as little-endian `raw_data`; the typed `*_data` fields are here
/// so that models written by other tools decode too.
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int64, repeated, packed = "false", tag = "1")]
    pub dims: Vec<i64>,
    /// A [`DataType`] value.
    #[prost(int32, optional, tag = "2")]
    pub data_type: Option<i32>,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub string_data: Vec<Vec<u8>>,
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    #[prost(string, optional, tag = "8")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "12")]
    pub doc_string: Option<String>,
    #[prost(bytes = "vec", optional, tag = "9")]
    pub raw_data: Option<Vec<u8>>,
    #[prost(double, repeated, tag = "10")]
    pub double_data: Vec<f64>,
    #[prost(uint64, repeated, tag = "11")]
    pub uint64_data: Vec<u64>,
    /// `location`, `offset`, `length`, `checksum` entries when `data_location == EXTERNAL`.
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringStringEntryProto>,
    #[prost(enumeration = "DataLocation", optional, tag = "14")]
    pub data_location: Option<i32>,
}

impl TensorProto {
    /// A tensor with `raw_data` holding `bytes` (already little-endian).
    pub fn from_raw(name: &str, data_type: DataType, dims: &[i64], bytes: Vec<u8>) -> Self {
        Self {
            name: Some(name.to_owned()),
            data_type: Some(data_type as i32),
            dims: dims.to_vec(),
            raw_data: Some(bytes),
            ..Default::default()
        }
    }

    /// An `f32` tensor.
    pub fn from_f32(name: &str, dims: &[i64], data: &[f32]) -> Self {
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::from_raw(name, DataType::Float, dims, bytes)
    }

    /// An `f16` tensor, rounded to nearest from `f32` values.
    pub fn from_f32_as_f16(name: &str, dims: &[i64], data: &[f32]) -> Self {
        let bytes = data
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        Self::from_raw(name, DataType::Float16, dims, bytes)
    }

    /// An `i64` tensor.
    pub fn from_i64(name: &str, dims: &[i64], data: &[i64]) -> Self {
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::from_raw(name, DataType::Int64, dims, bytes)
    }

    /// An `i32` tensor.
    pub fn from_i32(name: &str, dims: &[i64], data: &[i32]) -> Self {
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::from_raw(name, DataType::Int32, dims, bytes)
    }

    /// A `bool` tensor.
    pub fn from_bool(name: &str, dims: &[i64], data: &[bool]) -> Self {
        let bytes = data.iter().map(|&v| u8::from(v)).collect();
        Self::from_raw(name, DataType::Bool, dims, bytes)
    }

    /// Number of elements implied by `dims` (1 for a scalar).
    pub fn num_elements(&self) -> i64 {
        self.dims.iter().product()
    }

    /// The values of an `f32` tensor, from `raw_data` or `float_data`.
    pub fn to_f32_vec(&self) -> Option<Vec<f32>> {
        if self.data_type != Some(DataType::Float as i32) {
            return None;
        }
        match &self.raw_data {
            Some(raw) => Some(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            None => Some(self.float_data.clone()),
        }
    }

    /// The values of an `f16` tensor widened to `f32` (from `raw_data` or `int32_data`).
    pub fn f16_to_f32_vec(&self) -> Option<Vec<f32>> {
        if self.data_type != Some(DataType::Float16 as i32) {
            return None;
        }
        match &self.raw_data {
            Some(raw) => Some(
                raw.chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            None => Some(
                self.int32_data
                    .iter()
                    .map(|&bits| half::f16::from_bits(bits as u16).to_f32())
                    .collect(),
            ),
        }
    }

    /// The values of an `i64` tensor, from `raw_data` or `int64_data`.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        if self.data_type != Some(DataType::Int64 as i32) {
            return None;
        }
        match &self.raw_data {
            Some(raw) => Some(
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            None => Some(self.int64_data.clone()),
        }
    }
}

/// `ValueInfoProto`: name and type of a graph input, output or intermediate value.
#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
    #[prost(string, optional, tag = "3")]
    pub doc_string: Option<String>,
}

/// Nested types of [`TypeProto`].
pub mod type_proto {
    use super::TensorShapeProto;

    /// `TypeProto.Tensor`: element type and (possibly symbolic) shape.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tensor {
        /// A [`super::DataType`] value.
        #[prost(int32, optional, tag = "1")]
        pub elem_type: Option<i32>,
        #[prost(message, optional, tag = "2")]
        pub shape: Option<TensorShapeProto>,
    }

    /// The `value` oneof of `TypeProto` (only tensors are supported here).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(message, tag = "1")]
        TensorType(Tensor),
    }
}

/// `TypeProto`: the type of a value.
#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    #[prost(oneof = "type_proto::Value", tags = "1")]
    pub value: Option<type_proto::Value>,
    #[prost(string, optional, tag = "6")]
    pub denotation: Option<String>,
}

impl TypeProto {
    /// A tensor type with the given element type and dimensions.
    pub fn tensor(elem_type: DataType, dims: &[Dim]) -> Self {
        Self {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem_type as i32),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(tensor_shape_proto::Dimension::from)
                        .collect(),
                }),
            })),
            denotation: None,
        }
    }
}

/// Nested types of [`TensorShapeProto`].
pub mod tensor_shape_proto {
    /// `TensorShapeProto.Dimension`: a fixed size, a symbolic name, or unknown.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dimension {
        #[prost(oneof = "dimension::Value", tags = "1, 2")]
        pub value: Option<dimension::Value>,
        #[prost(string, optional, tag = "3")]
        pub denotation: Option<String>,
    }

    /// Nested types of [`Dimension`].
    pub mod dimension {
        /// The `value` oneof of `Dimension`.
        #[derive(Clone, PartialEq, Eq, Hash, prost::Oneof)]
        pub enum Value {
            #[prost(int64, tag = "1")]
            DimValue(i64),
            #[prost(string, tag = "2")]
            DimParam(String),
        }
    }

    impl From<&super::Dim> for Dimension {
        fn from(dim: &super::Dim) -> Self {
            let value = match dim {
                super::Dim::Fixed(n) => Some(dimension::Value::DimValue(*n)),
                super::Dim::Symbolic(s) => Some(dimension::Value::DimParam(s.clone())),
                super::Dim::Unknown => None,
            };
            Dimension {
                value,
                denotation: None,
            }
        }
    }
}

/// `TensorShapeProto`: a list of dimensions.
#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<tensor_shape_proto::Dimension>,
}

/// One dimension of a graph input/output shape.
///
/// Converts from integers (`8.into()`) and from strings (`"batch".into()`, a symbolic
/// dimension that ONNX Runtime binds at run time).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A named size (`dim_param`), e.g. `"batch"` or `"sequence"`.
    Symbolic(String),
    /// Neither size nor name.
    Unknown,
}

impl From<i64> for Dim {
    fn from(n: i64) -> Self {
        Dim::Fixed(n)
    }
}

impl From<i32> for Dim {
    fn from(n: i32) -> Self {
        Dim::Fixed(n.into())
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Self {
        Dim::Fixed(i64::try_from(n).expect("dimension fits in i64"))
    }
}

impl From<&str> for Dim {
    fn from(name: &str) -> Self {
        Dim::Symbolic(name.to_owned())
    }
}

impl From<String> for Dim {
    fn from(name: String) -> Self {
        Dim::Symbolic(name)
    }
}

/// Decodes a serialized `ModelProto`.
pub fn decode_model(bytes: &[u8]) -> anyhow::Result<ModelProto> {
    Ok(ModelProto::decode(bytes)?)
}

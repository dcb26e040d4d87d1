use prost::Message;

use crate::proto::{
    decode_model, tensor_shape_proto::dimension::Value as DimValue, type_proto, OperatorSetIdProto,
    StringStringEntryProto,
};
use crate::{AttributeProto, DataType, Dim, GraphBuilder, ModelBuilder, TensorProto};

fn dims(v: &[Dim]) -> Vec<Dim> {
    v.to_vec()
}

#[test]
fn opset_import_wire_format() {
    // domain "" (field 1, length-delimited), version 17 (field 2, varint).
    let opset = OperatorSetIdProto {
        domain: Some(String::new()),
        version: Some(17),
    };
    assert_eq!(opset.encode_to_vec(), [0x0a, 0x00, 0x10, 17]);
    let entry = StringStringEntryProto::new("k", "v");
    assert_eq!(entry.encode_to_vec(), [0x0a, 1, b'k', 0x12, 1, b'v']);
}

#[test]
fn zero_valued_attributes_are_encoded() {
    // proto2 presence: ONNX Runtime reads attributes with has_i(), so i = 0 must be on the wire.
    let attr = AttributeProto::int("axis", 0);
    let bytes = attr.encode_to_vec();
    // name (1) "axis", i (3) = 0, type (20) = INT (2).
    assert_eq!(
        bytes,
        [0x0a, 4, b'a', b'x', b'i', b's', 0x18, 0x00, 0xa0, 0x01, 0x02]
    );
    let back = AttributeProto::decode(bytes.as_slice()).unwrap();
    assert_eq!(back.i, Some(0));
    assert_eq!(back.r#type(), crate::proto::AttributeType::Int);

    let f = AttributeProto::float("alpha", 0.0);
    assert_eq!(
        AttributeProto::decode(&*f.encode_to_vec()).unwrap().f,
        Some(0.0)
    );
}

#[test]
fn repeated_fields_follow_onnx_proto_packing() {
    // dims (1) is not packed in onnx.proto; raw_data (9) holds little-endian f32.
    let t = TensorProto::from_f32("w", &[2, 1], &[1.0, -2.0]);
    let bytes = t.encode_to_vec();
    assert_eq!(&bytes[..4], &[0x08, 2, 0x08, 1]);
    let back = TensorProto::decode(bytes.as_slice()).unwrap();
    assert_eq!(back, t);
    assert_eq!(back.to_f32_vec().unwrap(), [1.0, -2.0]);
    assert_eq!(
        back.raw_data.as_deref().unwrap()[4..],
        (-2.0f32).to_le_bytes()
    );

    // ints (8) of an attribute are unpacked too: one tag per element.
    let a = AttributeProto::ints("perm", &[0, 2, 1]);
    let bytes = a.encode_to_vec();
    assert_eq!(bytes.iter().filter(|&&b| b == 0x40).count(), 3);

    // float_data (4) is declared packed: one length-delimited field.
    let t = TensorProto {
        float_data: vec![1.0, 2.0],
        ..Default::default()
    };
    assert_eq!(&t.encode_to_vec()[..2], &[0x22, 8]);
}

#[test]
fn symbolic_and_fixed_dims() {
    let d: Vec<Dim> = vec!["batch".into(), 8.into(), 3usize.into(), Dim::Unknown];
    let ty = crate::proto::TypeProto::tensor(DataType::Float, &d);
    let back = crate::proto::TypeProto::decode(&*ty.encode_to_vec()).unwrap();
    let Some(type_proto::Value::TensorType(t)) = back.value else {
        panic!("not a tensor type")
    };
    assert_eq!(t.elem_type, Some(DataType::Float as i32));
    let values: Vec<_> = t.shape.unwrap().dim.into_iter().map(|d| d.value).collect();
    assert_eq!(
        values,
        [
            Some(DimValue::DimParam("batch".into())),
            Some(DimValue::DimValue(8)),
            Some(DimValue::DimValue(3)),
            None
        ]
    );
}

#[test]
fn f16_initializer_rounds_from_f32() {
    let mut g = GraphBuilder::new("g", 17);
    let name = g.initializer_f16("w", &[3], &[1.0, 0.1, 65504.0]).unwrap();
    let model = finish(g, &name, DataType::Float16, &[3.into()]);
    let t = &model.graph.unwrap().initializer[0];
    assert_eq!(t.data_type, Some(DataType::Float16 as i32));
    assert_eq!(t.raw_data.as_ref().unwrap().len(), 6);
    let values = t.f16_to_f32_vec().unwrap();
    assert_eq!(values[0], 1.0);
    assert!((values[1] - 0.1).abs() < 1e-4);
    assert_eq!(values[2], 65504.0);
}

fn finish(g: GraphBuilder, out: &str, ty: DataType, d: &[Dim]) -> crate::ModelProto {
    let mut g = g;
    g.output(out, ty, d).unwrap();
    ModelBuilder::from_graph(g).build().unwrap()
}

#[test]
fn scoped_names_follow_hf_parameters() {
    let mut g = GraphBuilder::new("g", 17);
    let x = g
        .input("x", DataType::Float, &dims(&["batch".into(), 3.into()]))
        .unwrap();
    // weight [out = 2, in = 3], row-major as in PyTorch.
    let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let y = g
        .scope("encoder.layer.0", |g| {
            g.scope("attention.self", |g| {
                g.linear("query", &x, &w, [2, 3], Some(&[0.5, -0.5]))
            })
        })
        .unwrap();
    assert_eq!(y, "encoder.layer.0.attention.self.query/Add_output_0");
    let nodes: Vec<_> = g.nodes().iter().map(|n| n.name().to_owned()).collect();
    assert_eq!(
        nodes,
        [
            "encoder.layer.0.attention.self.query/MatMul",
            "encoder.layer.0.attention.self.query/Add"
        ]
    );
    assert_eq!(g.current_scope(), "");
    let model = finish(g, &y, DataType::Float, &dims(&["batch".into(), 2.into()]));
    let graph = model.graph.unwrap();
    let weight = &graph.initializer[0];
    assert_eq!(weight.name(), "encoder.layer.0.attention.self.query.weight");
    assert_eq!(weight.dims, [3, 2]);
    assert_eq!(weight.to_f32_vec().unwrap(), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    assert_eq!(
        graph.initializer[1].name(),
        "encoder.layer.0.attention.self.query.bias"
    );
    assert_eq!(graph.node[0].input, [x.as_str(), weight.name()]);
}

#[test]
fn repeated_ops_get_unique_names() {
    let mut g = GraphBuilder::new("g", 17);
    let x = g.input("x", DataType::Float, &[4.into()]).unwrap();
    let a = g.relu(&x);
    let b = g.relu(&a);
    let c = g.relu(&b);
    assert_eq!(a, "Relu_output_0");
    assert_eq!(b, "Relu_1_output_0");
    assert_eq!(c, "Relu_2_output_0");
    assert_eq!(g.unique_value_name("x"), "x_1");
}

#[test]
fn constants_are_shared() {
    let mut g = GraphBuilder::new("g", 17);
    let x = g.input("x", DataType::Float, &[4.into()]).unwrap();
    let _ = g.gelu_erf(&x);
    let _ = g.gelu_erf(&x);
    let a = g.const_i64(&[0, 1]);
    let b = g.const_i64(&[0, 1]);
    let c = g.const_i64(&[1]);
    assert_eq!(a, b);
    assert_eq!(a, "const_i64_0_1");
    assert_ne!(a, c);
    assert_eq!(g.scalar_f32(0.5), "scalar_f32_0.5");
    // Scalars 0.5, 1, √2 plus two i64 vectors.
    let out = g.identity(&x);
    let model = finish(g, &out, DataType::Float, &[4.into()]);
    let graph = model.graph.unwrap();
    assert_eq!(graph.initializer.len(), 5);
    let half = graph
        .initializer
        .iter()
        .find(|t| t.name() == "scalar_f32_0.5")
        .unwrap();
    assert!(half.dims.is_empty());
}

#[test]
fn gelu_is_the_bert_pattern() {
    let mut g = GraphBuilder::new("g", 17);
    let x = g.input("x", DataType::Float, &[4.into()]).unwrap();
    let _ = g.gelu_erf(&x);
    let ops: Vec<_> = g.nodes().iter().map(|n| n.op_type()).collect();
    assert_eq!(ops, ["Div", "Erf", "Add", "Mul", "Mul"]);
}

#[test]
fn reduce_mean_follows_the_opset() {
    for (opset, inputs, attrs) in [(17, 1, 2), (18, 2, 1)] {
        let mut g = GraphBuilder::new("g", opset);
        let x = g
            .input("x", DataType::Float, &[2.into(), 4.into()])
            .unwrap();
        let _ = g.reduce_mean(&x, &[-1], true);
        let node = &g.nodes()[0];
        assert_eq!(node.input.len(), inputs, "opset {opset}");
        assert_eq!(node.attribute.len(), attrs, "opset {opset}");
    }
}

#[test]
fn attention_omits_trailing_optional_inputs() {
    let mut g = GraphBuilder::new("g", 17);
    let x = g
        .input("x", DataType::Float, &[1.into(), 2.into(), 4.into()])
        .unwrap();
    let m = g
        .input("m", DataType::Int32, &[1.into(), 2.into()])
        .unwrap();
    let _ = g.multi_head_attention(&x, &x, &x, None, 2);
    let _ = g.multi_head_attention(&x, &x, &x, Some(&m), 2);
    let nodes = g.nodes();
    assert_eq!(nodes[0].input, ["x", "x", "x"]);
    assert_eq!(nodes[1].input, ["x", "x", "x", "", "m"]);
    assert_eq!(nodes[1].domain(), "com.microsoft");
    assert_eq!(nodes[1].attribute[0].name(), "num_heads");
    assert_eq!(nodes[1].attribute[0].i, Some(2));
}

#[test]
fn model_requires_imported_domains() {
    let mut model = ModelBuilder::new("g", 17);
    let g = model.graph();
    let x = g
        .input("x", DataType::Float, &[1.into(), 2.into(), 4.into()])
        .unwrap();
    let y = g.multi_head_attention(&x, &x, &x, None, 2);
    g.output(&y, DataType::Float, &[1.into(), 2.into(), 4.into()])
        .unwrap();
    let err = model.build().unwrap_err();
    assert!(err.to_string().contains("com.microsoft"), "{err}");
    assert!(model.add_opset("com.microsoft", 1).build().is_ok());
}

#[test]
fn model_round_trips_opsets_ir_and_metadata() {
    let mut model = ModelBuilder::new("tiny", 17)
        .add_opset("com.microsoft", 1)
        .producer("adept", "9.9")
        .model_version("ai.adept", 3)
        .doc_string("doc");
    let g = model.graph();
    let x = g.input("x", DataType::Float, &["n".into()]).unwrap();
    let y = g.relu(&x);
    g.output_as(&y, "y", DataType::Float, &["n".into()])
        .unwrap();
    let model = model
        .metadata("adept.method", "adept")
        .metadata("adept.rank", "19")
        .metadata("adept.method", "dept");
    let bytes = model.to_bytes().unwrap();
    let back = decode_model(&bytes).unwrap();
    assert_eq!(back, model.build().unwrap());
    assert_eq!(back, model.clone().into_proto().unwrap());
    // Graph (field 7) is written last, after the metadata (field 14).
    assert_eq!(back.encode_to_vec().len(), bytes.len());
    assert_eq!(back.ir_version, Some(8));
    let opsets: Vec<_> = back
        .opset_import
        .iter()
        .map(|o| (o.domain().to_owned(), o.version()))
        .collect();
    assert_eq!(
        opsets,
        [("".to_owned(), 17), ("com.microsoft".to_owned(), 1)]
    );
    let meta: Vec<_> = back
        .metadata_props
        .iter()
        .map(|e| (e.key(), e.value()))
        .collect();
    assert_eq!(meta, [("adept.method", "dept"), ("adept.rank", "19")]);
    assert_eq!(back.producer_name(), "adept");
    assert_eq!(back.producer_version(), "9.9");
    assert_eq!(back.domain(), "ai.adept");
    assert_eq!(back.model_version(), 3);
    let graph = back.graph.unwrap();
    assert_eq!(graph.name(), "tiny");
    assert_eq!(graph.node[0].output, ["y"]);
    assert_eq!(graph.output[0].name(), "y");

    let ir = ModelBuilder::new("g", 21).ir_version(9);
    assert_eq!(crate::ir_version_for_opset(21), 10);
    assert!(ir.build().is_err(), "a graph without outputs is rejected");
}

#[test]
fn output_as_uses_identity_for_inputs() {
    let mut g = GraphBuilder::new("g", 17);
    let x = g.input("x", DataType::Float, &[1.into()]).unwrap();
    g.output_as(&x, "y", DataType::Float, &[1.into()]).unwrap();
    assert_eq!(g.nodes()[0].op_type(), "Identity");
    assert_eq!(g.nodes()[0].output, ["y"]);
    assert!(g.output_as(&x, "y", DataType::Float, &[1.into()]).is_err());
}

#[test]
fn validation_errors() {
    let mut g = GraphBuilder::new("g", 17);
    assert!(g.initializer_f32("w", &[2, 2], &[1.0; 3]).is_err());
    g.initializer_f32("w", &[1], &[1.0]).unwrap();
    assert!(g.initializer_f32("w", &[1], &[1.0]).is_err());
    assert!(g.input("w", DataType::Float, &[1.into()]).is_err());
    assert!(g.output("nope", DataType::Float, &[1.into()]).is_err());
    assert!(ModelBuilder::new("old", 13).build().is_err());
}

#[test]
#[should_panic(expected = "is not a value of the graph")]
fn undefined_inputs_panic() {
    let mut g = GraphBuilder::new("g", 17);
    let _ = g.relu("missing");
}

#[test]
fn save_is_atomic_and_overwrites() {
    let dir = std::env::temp_dir().join(format!("adept-onnx-save-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.onnx");
    let mut model = ModelBuilder::new("g", 17);
    let g = model.graph();
    let x = g.input("x", DataType::Float, &[1.into()]).unwrap();
    let y = g.relu(&x);
    g.output(&y, DataType::Float, &[1.into()]).unwrap();
    std::fs::write(&path, b"old").unwrap();
    model.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes, model.to_bytes().unwrap());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "model.onnx")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(crate::write_atomic(&dir.join("no/such/dir/m.onnx"), b"x").is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `if_else`: the branches become the `If` node's sub-graphs, a weight both add is stored once
/// (another one under the same name is an error; so is an If in a branch), a result defined outside a
/// branch leaves it through an `Identity`, and what one branch quantized is not reused by the
/// other (whose nodes could not see it).
#[test]
fn if_else_builds_two_branches_over_shared_weights() {
    let mut g = GraphBuilder::new("g", 17);
    let x = g
        .input("x", DataType::Float, &dims(&["n".into(), 8.into()]))
        .unwrap();
    let flag = g.input("flag", DataType::Bool, &[]).unwrap();
    g.set_matmul_quantization(Some(crate::MatMulQuantization {
        min_features: 8,
        keep_float: vec!["kept".into()],
        activations: crate::ActivationQuantization::PerRow,
        per_row: Vec::new(),
    }));
    let w: Vec<f32> = (0..64).map(|i| i as f32 / 64.0 - 0.5).collect();
    let outs = g
        .if_else(
            &flag,
            &[("y", DataType::Float), ("passed", DataType::Float)],
            |g| {
                let a = g.linear("kept", &x, &w, [8, 8], None)?;
                let q = g.linear("lin", &x, &w, [8, 8], None)?;
                Ok(vec![g.add(&a, &q), x.clone()])
            },
            |g| {
                let a = g.linear("kept", &x, &w, [8, 8], None)?; // shared
                let q = g.linear("lin", &x, &w, [8, 8], None)?; // quantized again, here
                Ok(vec![g.add(&a, &q), x.clone()])
            },
        )
        .unwrap();
    assert_eq!(outs, ["y", "passed"]);
    g.output("y", DataType::Float, &[]).unwrap();
    g.validate().unwrap();
    let inits: Vec<&str> = g.initializer_names().collect();
    assert_eq!(inits.iter().filter(|n| **n == "kept.weight").count(), 1);
    assert_eq!(inits.iter().filter(|n| n.starts_with("kept.")).count(), 1);
    assert_eq!(g.nodes().len(), 1, "only the If at the top");
    let node = &g.nodes()[0];
    assert_eq!(node.op_type(), "If");
    let branch = |name: &str| {
        node.attribute
            .iter()
            .find(|a| a.name() == name)
            .and_then(|a| a.g.as_deref())
            .unwrap()
            .clone()
    };
    let (then_g, else_g) = (branch("then_branch"), branch("else_branch"));
    for sub in [&then_g, &else_g] {
        assert!(sub.input.is_empty() && sub.initializer.is_empty());
        assert_eq!(sub.output.len(), 2);
        // The outer input `x` leaves through an Identity of the branch.
        let last = sub.output[1].name();
        let id = sub.node.iter().find(|n| n.output[0] == last).unwrap();
        assert_eq!((id.op_type(), id.input[0].as_str()), ("Identity", "x"));
        // Each branch quantizes `x` itself (per row: ReduceMax).
        assert_eq!(
            sub.node
                .iter()
                .filter(|n| n.op_type() == "ReduceMax")
                .count(),
            1
        );
    }
    assert_eq!(
        g.all_nodes().len(),
        1 + then_g.node.len() + else_g.node.len()
    );
    // A node of one branch reading the other's value fails validation.
    let mut bad = g.clone();
    let then_value = then_g.node[0].output[0].clone();
    if let Some(a) = bad.nodes_mut_for_tests().first_mut() {
        let sub = a.attribute[1].g.as_deref_mut().unwrap();
        sub.node[0].input[0] = then_value;
    }
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("before it is defined"), "{err}");
}

/// What `if_else` refuses: the second branch storing other values under a name the first
/// used, and an `If` inside a branch.
#[test]
fn if_else_refuses_diverging_weights_and_nesting() {
    let w = vec![0.5f32; 16];
    let other = vec![-0.5f32; 16];
    let setup = || {
        let mut g = GraphBuilder::new("g", 17);
        let x = g
            .input("x", DataType::Float, &dims(&["n".into(), 4.into()]))
            .unwrap();
        let flag = g.input("flag", DataType::Bool, &[]).unwrap();
        (g, x, flag)
    };
    let (mut g, x, flag) = setup();
    let err = g
        .if_else(
            &flag,
            &[("y", DataType::Float)],
            |g| Ok(vec![g.linear("lin", &x, &w, [4, 4], None)?]),
            |g| Ok(vec![g.linear("lin", &x, &other, [4, 4], None)?]),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("different values") && err.contains("lin.weight"),
        "{err}"
    );
    let (mut g, x, flag) = setup();
    let err = g
        .if_else(
            &flag,
            &[("y", DataType::Float)],
            |g| {
                g.if_else(
                    &flag,
                    &[("z", DataType::Float)],
                    |g| Ok(vec![g.relu(&x)]),
                    |g| Ok(vec![g.relu(&x)]),
                )
            },
            |g| Ok(vec![g.relu(&x)]),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("do not nest"), "{err}");
}

/// ONNX `Attention` is a default-domain node with as many key heads as query heads, the mask
/// its fourth input; below opset 23 the helper refuses and says which opset to export with.
#[test]
fn onnx_attention_needs_opset_23() {
    let mut g = GraphBuilder::new("g", 23);
    let x = g
        .input("x", DataType::Float, &[1.into(), 3.into(), 8.into()])
        .unwrap();
    let m = g
        .input(
            "m",
            DataType::Bool,
            &[1.into(), 1.into(), 3.into(), 3.into()],
        )
        .unwrap();
    let _ = g.onnx_attention(&x, &x, &x, Some(&m), 2).unwrap();
    let node = &g.nodes()[0];
    assert_eq!((node.op_type(), node.domain()), ("Attention", ""));
    assert_eq!(node.input, ["x", "x", "x", "m"]);
    let heads: Vec<_> = node.attribute.iter().map(|a| (a.name(), a.i)).collect();
    assert_eq!(heads, [("q_num_heads", Some(2)), ("kv_num_heads", Some(2))]);

    let mut old = GraphBuilder::new("g", 17);
    let x = old
        .input("x", DataType::Float, &[1.into(), 3.into(), 8.into()])
        .unwrap();
    let err = old
        .onnx_attention(&x, &x, &x, None, 2)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("opset 23") && err.contains("opset 17"),
        "{err}"
    );
}

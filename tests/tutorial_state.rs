//! The tutorial's first example with stand-in layers (the real Dense and Lif live in
//! brainstate-nn), plus custom state, generics, tuple structs and load errors.
use brainstate::*;
use ndarray::{Array1, Array2};

/// Non-training Dense: its weights are plain arrays, so it saves nothing (as BrainPy).
#[derive(Stateful)]
struct Dense {
    #[stateful(name)]
    name: NodeName,
    w: Array2<f32>,
}

#[derive(Stateful)]
struct Lif {
    #[stateful(name)]
    name: NodeName,
    #[stateful(rename = "V")]
    v: Variable,
    spike: Variable,
    tau: f32,
}

#[derive(Stateful)]
#[allow(clippy::upper_case_acronyms)]
struct SNN {
    #[stateful(name)]
    name: NodeName,
    var: Variable,
    l1: Dense,
    l2: Lif,
}

impl Lif {
    fn new(n: usize) -> Lif {
        Lif {
            name: NodeName::auto(),
            v: Variable::new(Array1::<f32>::zeros(n)),
            spike: Variable::new(Array1::from_elem(n, false)),
            tau: 2.0,
        }
    }
}

impl SNN {
    fn new() -> SNN {
        SNN {
            name: NodeName::auto(),
            var: Variable::new(Array1::<f32>::zeros(1)),
            l1: Dense {
                name: NodeName::auto(),
                w: Array2::zeros((28 * 28, 10)),
            },
            l2: Lif::new(10),
        }
    }
}

#[test]
fn local_and_global_state_match_the_tutorial() {
    let net = SNN::new();
    let local = net.save_state();
    assert_eq!(local.to_string(), "{'SNN0.var': f32[1]}");
    let global = save_state(&net).unwrap();
    assert_eq!(global.keys().collect::<Vec<_>>(), ["SNN0", "Dense0", "Lif0"]);
    assert_eq!(
        global.to_string(),
        "{'SNN0': {'SNN0.var': f32[1]},\n 'Dense0': {},\n 'Lif0': {'Lif0.V': f32[10], 'Lif0.spike': bool[10]}}"
    );
    assert_eq!(net.state_dict().unwrap(), global);
    let mut twin = SNN::new();
    let r = load_state(&mut twin, &global).unwrap();
    assert_eq!(
        r.to_string(),
        "StateLoadResult(missing_keys=[], unexpected_keys=[])"
    );
    assert_eq!(net.l1.w.len(), 7840);
    assert_eq!(net.l2.tau, 2.0);
}

#[test]
fn loaded_values_are_bit_identical() {
    let mut net = SNN::new();
    net.l2.v.array_mut::<f32>().unwrap().fill(-0.0);
    net.l2.v.array_mut::<f32>().unwrap()[3] = f32::from_bits(0x7fc0_1234);
    net.l2.spike.array_mut::<bool>().unwrap()[7] = true;
    let tree = save_state(&net).unwrap();
    let mut twin = SNN::new();
    twin.load_state_dict(&tree).unwrap();
    assert_eq!(save_state(&twin).unwrap(), tree);
    assert_eq!(twin.l2.v.array::<f32>().unwrap()[3].to_bits(), 0x7fc0_1234);
}

#[test]
fn edited_trees_report_missing_and_unexpected_keys() {
    let mut net = SNN::new();
    let mut tree = save_state(&net).unwrap();
    tree.shift_remove("Dense0");
    let lif = tree.get_mut("Lif0").unwrap();
    lif.shift_remove("Lif0.spike");
    lif.insert("Lif0.bogus".into(), Tensor::scalar(1i64));
    tree.get_mut("SNN0").unwrap().clear();
    let mut stale = StateDict::new();
    stale.insert("SNN1.var".into(), Tensor::scalar(0.0f32));
    tree.insert("SNN1".into(), stale);
    tree.insert("ExponentialEuler0".into(), StateDict::new());
    let r = load_state(&mut net, &tree).unwrap();
    assert_eq!(r.missing_keys, ["SNN0.var", "Dense0", "Lif0.spike"]);
    assert_eq!(r.unexpected_keys, ["Lif0.bogus", "SNN1.var"]);

    let err = load_state_with(&mut net, &tree, &LoadOptions::strict()).unwrap_err();
    let StateError::Load(e) = err else {
        panic!("expected a load error")
    };
    let keys: Vec<&str> = e.problems.iter().map(|p| p.key()).collect();
    assert_eq!(
        keys,
        ["SNN0.var", "Dense0", "Lif0.spike", "Lif0.bogus", "SNN1.var"]
    );
    assert!(
        e.to_string().contains("hint: load without LoadOptions::strict"),
        "{e}"
    );
}

#[test]
fn mismatches_are_all_reported_and_change_nothing() {
    let mut net = SNN::new();
    net.var.array_mut::<f32>().unwrap()[0] = 7.0;
    let before = save_state(&net).unwrap();
    let mut tree = before.clone();
    tree["SNN0"].insert("SNN0.var".into(), Tensor::from(Array1::<f32>::ones(1)));
    tree["Lif0"].insert("Lif0.V".into(), Tensor::from(Array1::<f32>::zeros(11)));
    tree["Lif0"].insert("Lif0.spike".into(), Tensor::from(Array1::<f32>::zeros(10)));
    let err = load_state(&mut net, &tree).unwrap_err();
    assert_eq!(
        err,
        StateError::Load(LoadError {
            problems: vec![
                LoadProblem::Shape {
                    key: "Lif0.V".into(),
                    expected: vec![10],
                    found: vec![11],
                    batch_axis: None
                },
                LoadProblem::Dtype {
                    key: "Lif0.spike".into(),
                    expected: DType::Bool,
                    found: DType::F32
                },
            ]
        })
    );
    assert_eq!(
        save_state(&net).unwrap(),
        before,
        "a failed load must change nothing"
    );
}

#[derive(Stateful)]
struct Batched {
    #[stateful(name)]
    name: NodeName,
    #[stateful(rename = "V")]
    v: Variable,
}

fn batched(batch: usize) -> Batched {
    Batched {
        name: NodeName::auto(),
        v: Variable::new(Array2::<f32>::zeros((batch, 10))).with_batch_axis(0),
    }
}

#[test]
fn batch_size_is_adopted_only_when_allowed() {
    let saved = save_state(&batched(256)).unwrap();
    let mut small = batched(32);
    let adopt = LoadOptions {
        adopt_batch: true,
        ..LoadOptions::default()
    };
    assert!(load_state_with(&mut small, &saved, &adopt).unwrap().is_exact());
    assert_eq!(small.v.shape(), &[256, 10]);

    let mut small = batched(32);
    let strict_batch = LoadOptions {
        adopt_batch: false,
        ..LoadOptions::default()
    };
    let err = load_state_with(&mut small, &saved, &strict_batch).unwrap_err();
    assert_eq!(
        err.to_string(),
        "state not loaded (1 problem; nothing was changed):\n  shape:\n    Batched0.V: batch size 256 differs from \
         the model's 32 (allow it with LoadOptions::adopt_batch)\nhint: the state was saved from a differently \
         configured model; rebuild the model with the saved sizes and dtypes"
    );
    assert_eq!(small.v.shape(), &[32, 10]);
}

/// The tutorial's `YourClass`: hand-written local state with keys `a`, `b`, `c`, `d0`, `d1`.
#[derive(Stateful)]
#[stateful(custom)]
struct YourClass {
    #[stateful(name)]
    name: NodeName,
    a: i64,
    b: Array1<f32>,
    c: Variable,
    d: Vec<Variable>,
}

impl CustomState for YourClass {
    fn save_local(&self) -> StateDict {
        let mut s = StateDict::new();
        s.insert("a".into(), Tensor::scalar(self.a));
        s.insert("b".into(), Tensor::from(self.b.clone()));
        s.insert("c".into(), self.c.value().clone());
        for (i, v) in self.d.iter().enumerate() {
            s.insert(format!("d{i}"), v.value().clone());
        }
        s
    }
    fn check_local(&self, state: &StateDict, options: &LoadOptions) -> LocalCheck {
        let mut c = Checker::new(state, options);
        c.tensor("a", DType::I64, &[])
            .tensor("b", DType::F32, &[self.b.len()])
            .variable("c", &self.c);
        for (i, v) in self.d.iter().enumerate() {
            c.variable(&format!("d{i}"), v);
        }
        c.finish()
    }
    fn apply_local(&mut self, state: &StateDict, _options: &LoadOptions) {
        if let Some(a) = state.get("a") {
            self.a = a.as_slice::<i64>().expect("checked")[0];
        }
        if let Some(b) = state.get("b") {
            self.b = b
                .as_array::<f32>()
                .expect("checked")
                .to_owned()
                .into_dimensionality()
                .expect("checked");
        }
        if let Some(c) = state.get("c") {
            self.c.reset(c.clone());
        }
        for (i, v) in self.d.iter_mut().enumerate() {
            if let Some(x) = state.get(&format!("d{i}")) {
                v.reset(x.clone());
            }
        }
    }
}

fn your_class(seed: f32) -> YourClass {
    YourClass {
        name: NodeName::auto(),
        a: 1,
        b: Array1::from_elem(10, seed),
        c: Variable::new(Array1::from_elem(3, seed)),
        d: vec![
            Variable::new(Array1::from_elem(3, seed)),
            Variable::new(Array1::from_elem(3, seed + 1.0)),
        ],
    }
}

#[test]
fn custom_state_has_the_tutorials_keys() {
    let x = your_class(0.5);
    let local = x.save_state();
    assert_eq!(local.keys().collect::<Vec<_>>(), ["a", "b", "c", "d0", "d1"]);
    let tree = save_state(&x).unwrap();
    let mut y = your_class(0.0);
    y.a = 5;
    assert!(load_state(&mut y, &tree).unwrap().is_exact());
    assert_eq!((y.a, y.b[0], y.d[1].array::<f32>().unwrap()[0]), (1, 0.5, 1.5));

    let mut bad = tree.clone();
    bad["YourClass0"].insert("b".into(), Tensor::from(Array1::<f32>::zeros(9)));
    bad["YourClass0"].shift_remove("d1");
    let err = load_state(&mut y, &bad).unwrap_err();
    assert!(
        err.to_string()
            .contains("YourClass0.b: expected shape [10], found [9]"),
        "{err}"
    );
    let r = load_state(&mut y, &{
        let mut t = tree.clone();
        t["YourClass0"].shift_remove("d1");
        t
    })
    .unwrap();
    assert_eq!(r.missing_keys, ["YourClass0.d1"]);
}

/// Generic and tuple structs, containers, explicit names and var lists.
#[derive(Stateful)]
struct Pair<A, B>(
    #[stateful(name)] NodeName,
    A,
    B,
    #[stateful(skip)] std::marker::PhantomData<u8>,
);

#[derive(Stateful)]
#[stateful(type_name = "Group")]
struct Many {
    #[stateful(name)]
    name: NodeName,
    vl: Vec<Variable>,
    maybe: Option<Variable>,
    none: Option<Variable>,
    arr: [Variable; 2],
    kids: Vec<Lif>,
    boxed: Option<Box<dyn Stateful + Send>>,
    vd: IndexMap<String, Variable>,
}

fn many() -> Many {
    let v = || Variable::new(Array1::<f32>::zeros(2));
    let mut vd = IndexMap::new();
    vd.insert("p".to_string(), v());
    Many {
        name: NodeName::auto(),
        vl: vec![v(), v()],
        maybe: Some(v()),
        none: None,
        arr: [v(), v()],
        kids: vec![Lif::new(1), Lif::new(2)],
        boxed: Some(Box::new(Lif::new(3))),
        vd,
    }
}

#[test]
fn containers_generics_and_tuple_structs() {
    let p = Pair(
        NodeName::new("pair").unwrap(),
        many(),
        Lif::new(4),
        std::marker::PhantomData,
    );
    let tree = save_state(&p).unwrap();
    assert_eq!(
        tree.keys().collect::<Vec<_>>(),
        ["pair", "Group0", "Lif3", "Lif0", "Lif1", "Lif2"]
    );
    assert_eq!(
        tree["Group0"].keys().collect::<Vec<_>>(),
        [
            "Group0.vl-0",
            "Group0.vl-1",
            "Group0.maybe",
            "Group0.arr-0",
            "Group0.arr-1",
            "Group0.vd-p"
        ]
    );
    let mut twin = Pair(
        NodeName::new("pair").unwrap(),
        many(),
        Lif::new(4),
        std::marker::PhantomData,
    );
    assert!(load_state(&mut twin, &tree).unwrap().is_exact());
}

#[test]
fn names_are_reproducible_and_validated() {
    fn names(t: StateTree) -> Vec<String> {
        t.keys().cloned().collect()
    }
    let first = names(save_state(&SNN::new()).unwrap());
    let second = names(save_state(&SNN::new()).unwrap());
    assert_eq!(first, second);
    let threads: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || names(save_state(&SNN::new()).unwrap())))
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), first);
    }
    assert!(matches!(NodeName::new("my-lif"), Err(NameError::Invalid { .. })));
    let mut dup = SNN::new();
    dup.l1.name = NodeName::new("Lif0").unwrap();
    assert_eq!(
        save_state(&dup).unwrap_err(),
        NameError::Duplicate {
            name: "Lif0".into(),
            root: "SNN0".into()
        }
    );
    assert!(matches!(
        load_state(&mut dup, &StateTree::new()),
        Err(StateError::Name(_))
    ));
}

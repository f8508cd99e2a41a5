//! A node written as `#[derive(Stateful)]` expands it, to pin the trait's contract.
use brainstate::__private::{FieldMut, FieldRef};
use brainstate::*;
use ndarray::Array1;

struct Lif {
    name: NodeName,
    v: Variable,
    spike: Variable,
    tau: f32,
}

impl Stateful for Lif {
    fn type_name(&self) -> &'static str {
        "Lif"
    }
    fn node_name(&self) -> &NodeName {
        &self.name
    }
    fn name(&self) -> &str {
        self.name.resolve(self)
    }
    fn visit_variables<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Variable)) {
        #[allow(unused_imports)]
        use brainstate::__private::{ViaPlain as _, ViaStateField as _};
        (&FieldRef(&self.v)).__visit_variables("V", f);
        (&FieldRef(&self.spike)).__visit_variables("spike", f);
        (&FieldRef(&self.tau)).__visit_variables("tau", f);
    }
    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&'a dyn Stateful)) {
        #[allow(unused_imports)]
        use brainstate::__private::{ViaPlain as _, ViaStateField as _};
        (&FieldRef(&self.v)).__visit_children(f);
        (&FieldRef(&self.tau)).__visit_children(f);
    }
    fn visit_mut<'a>(
        &'a mut self,
        vars: &mut dyn FnMut(&str, &'a mut Variable),
        children: &mut dyn FnMut(&'a mut dyn Stateful),
    ) {
        #[allow(unused_imports)]
        use brainstate::__private::{ViaPlainMut as _, ViaStateFieldMut as _};
        let Lif {
            name: _,
            v,
            spike,
            tau,
        } = self;
        (&mut FieldMut(Some(v))).__visit_mut("V", vars, children);
        (&mut FieldMut(Some(spike))).__visit_mut("spike", vars, children);
        (&mut FieldMut(Some(tau))).__visit_mut("tau", vars, children);
    }
}

struct Net {
    name: NodeName,
    var: Variable,
    layers: Vec<Lif>,
}

impl Stateful for Net {
    fn type_name(&self) -> &'static str {
        "Net"
    }
    fn node_name(&self) -> &NodeName {
        &self.name
    }
    fn name(&self) -> &str {
        self.name.resolve(self)
    }
    fn visit_variables<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Variable)) {
        #[allow(unused_imports)]
        use brainstate::__private::{ViaPlain as _, ViaStateField as _};
        (&FieldRef(&self.var)).__visit_variables("var", f);
        (&FieldRef(&self.layers)).__visit_variables("layers", f);
    }
    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&'a dyn Stateful)) {
        #[allow(unused_imports)]
        use brainstate::__private::{ViaPlain as _, ViaStateField as _};
        (&FieldRef(&self.var)).__visit_children(f);
        (&FieldRef(&self.layers)).__visit_children(f);
    }
    fn visit_mut<'a>(
        &'a mut self,
        vars: &mut dyn FnMut(&str, &'a mut Variable),
        children: &mut dyn FnMut(&'a mut dyn Stateful),
    ) {
        #[allow(unused_imports)]
        use brainstate::__private::{ViaPlainMut as _, ViaStateFieldMut as _};
        let Net { name: _, var, layers } = self;
        (&mut FieldMut(Some(var))).__visit_mut("var", vars, children);
        (&mut FieldMut(Some(layers))).__visit_mut("layers", vars, children);
    }
}

fn lif(n: usize) -> Lif {
    Lif {
        name: NodeName::auto(),
        v: Variable::new(Array1::<f32>::zeros(n)),
        spike: Variable::new(Array1::<bool>::from_elem(n, false)),
        tau: 10.0,
    }
}

fn net() -> Net {
    Net {
        name: NodeName::auto(),
        var: Variable::new(Array1::<f32>::zeros(1)),
        layers: vec![lif(3), lif(4)],
    }
}

#[test]
fn hand_expansion_saves_and_loads() {
    let n = net();
    assert_eq!(n.save_state().to_string(), "{'Net0.var': f32[1]}");
    let tree = save_state(&n).unwrap();
    assert_eq!(
        tree.to_string(),
        "{'Net0': {'Net0.var': f32[1]},\n 'Lif0': {'Lif0.V': f32[3], 'Lif0.spike': bool[3]},\n 'Lif1': {'Lif1.V': f32[4], 'Lif1.spike': bool[4]}}"
    );
    let mut twin = net();
    assert!(load_state(&mut twin, &tree).unwrap().is_exact());
    let keys: Vec<String> = variables_mut(&mut twin)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["Net0.var", "Lif0.V", "Lif0.spike", "Lif1.V", "Lif1.spike"]);
    assert_eq!(n.layers[0].tau, 10.0);
}

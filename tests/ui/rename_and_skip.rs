use brainstate::{NodeName, Stateful, Variable};

#[derive(Stateful)]
struct Lif {
    #[stateful(name)]
    name: NodeName,
    #[stateful(rename = "V", skip)]
    v: Variable,
}

fn main() {}

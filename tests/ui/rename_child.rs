use brainstate::{NodeName, Stateful, Variable};

#[derive(Stateful)]
struct Lif {
    #[stateful(name)]
    name: NodeName,
    v: Variable,
}

#[derive(Stateful)]
struct Net {
    #[stateful(name)]
    name: NodeName,
    #[stateful(rename = "layer")]
    lif: Lif,
}

fn main() {}

use brainstate::{NodeName, Stateful};

#[derive(Stateful)]
#[stateful(prefix = "x")]
struct Lif {
    #[stateful(name)]
    name: NodeName,
}

fn main() {}

use brainstate::{NodeName, Stateful};

#[derive(Stateful)]
#[stateful(custom)]
struct Mine {
    #[stateful(name)]
    name: NodeName,
}

fn main() {}

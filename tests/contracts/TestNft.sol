// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice The approval part of an ERC-721: its Approval event has the same signature, and so
/// the same topic0, as ERC-20's, but the token id is indexed too: four topics, no data.
contract TestNft {
    event Transfer(address indexed from, address indexed to, uint256 indexed tokenId);
    event Approval(address indexed owner, address indexed approved, uint256 indexed tokenId);

    mapping(uint256 => address) public ownerOf;
    mapping(address => uint256) public balanceOf;
    mapping(uint256 => address) public getApproved;

    function mint(address to, uint256 tokenId) external {
        require(to != address(0), "mint to the zero address");
        require(ownerOf[tokenId] == address(0), "token already minted");
        ownerOf[tokenId] = to;
        balanceOf[to] += 1;
        emit Transfer(address(0), to, tokenId);
    }

    function approve(address approved, uint256 tokenId) external {
        address owner = ownerOf[tokenId];
        require(owner == msg.sender, "not the owner");
        getApproved[tokenId] = approved;
        emit Approval(owner, approved, tokenId);
    }
}
